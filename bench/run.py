"""``make bench``: poolwarden against gunicorn, uvicorn and granian, measured with wrk.

Rounds are interleaved (every server and mode once per round, in a rotated order) so
that drift of the machine over the run touches every server alike, and the report takes
the median over rounds. wrk gets one core and the servers the rest, because the targets
were set that way: "one worker process, wrk on the other core".

Usage::

    make bench                                        # 3 rounds x 10 s, all servers
    make bench BENCH_ARGS="--only poolwarden --quick" # smoke test of our server alone
    .venv/bin/python -m bench.run --help
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import report, servers, tools
from bench.cpu import read_cpu
from bench.report import Measurement
from bench.servers import RunningServer, ServerError, ServerSpec
from bench.wrk import MODES, WrkError, run_wrk, wrk_argv

WARMUP_SECONDS = 2.0
QUICK_DURATION = 3.0


@dataclass(frozen=True)
class Pinning:
    """Which cores the servers and wrk run on; None when pinning is off."""

    server: set[int] | None
    client: set[int] | None
    taskset: str | None


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, decided before the first server starts."""

    specs: tuple[ServerSpec, ...]
    modes: tuple[str, ...]
    rounds: int
    duration: float
    workers: int
    warmup: float
    wrk: str
    pinning: Pinning


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark poolwarden against gunicorn, uvicorn and granian with wrk.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated substrings; run servers whose name contains one "
        f"(names: {', '.join(s.name for s in servers.SERVERS)})",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, from: {', '.join(MODES)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke test: {QUICK_DURATION:g}s runs, 1 round"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and servers")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = QUICK_DURATION, 1
    if args.duration <= 0 or args.rounds < 1 or args.workers < 1:
        parser.error("--duration must be > 0, --rounds and --workers >= 1")
    unknown = set(_split(args.modes)) - set(MODES)
    if unknown or not _split(args.modes):
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {', '.join(MODES)}")
    return args


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def select_servers(only: str) -> tuple[ServerSpec, ...]:
    wanted = _split(only)
    return tuple(s for s in servers.SERVERS if not wanted or any(w in s.name for w in wanted))


def plan_pinning(taskset: str | None, disabled: bool) -> Pinning:
    """wrk on the last core we may use, the servers on all the others (if there are any)."""
    cpus = sorted(os.sched_getaffinity(0))
    if disabled or len(cpus) < 2 or taskset is None:
        why = "--no-pin" if disabled else "taskset missing" if taskset is None else "1 core"
        print(f"bench: not pinning ({why}); wrk and the server share the cores")
        return Pinning(server=None, client=None, taskset=None)
    return Pinning(server=set(cpus[:-1]), client={cpus[-1]}, taskset=taskset)


def run_rounds(plan: Plan) -> tuple[list[Measurement], dict[str, str]]:
    """Run every round; a server that fails to start is skipped for the rest of the run."""
    measurements: list[Measurement] = []
    skipped: dict[str, str] = {}
    for round_no in range(1, plan.rounds + 1):
        # Rotate the start of each round, so no server always runs first (or last).
        active = [spec for spec in plan.specs if spec.name not in skipped]
        shift = (round_no - 1) % max(len(active), 1)
        for spec in active[shift:] + active[:shift]:
            try:
                measurements += run_server(plan, spec, round_no)
            except ServerError as exc:
                skipped[spec.name] = f"round {round_no}: {exc}"
                print(f"bench: SKIPPING {spec.name} for the rest of the run: {exc}", flush=True)
    return measurements, skipped


def run_server(plan: Plan, spec: ServerSpec, round_no: int) -> list[Measurement]:
    """Start one server, measure it in every mode, stop it."""
    results = []
    pin = plan.pinning
    with servers.serve(spec, plan.workers, pin.server, pin.taskset) as server:
        for mode in plan.modes:
            if server.alive():
                m = measure(plan, server, mode, round_no)
            else:
                error = server.explain(f"server had exited ({server.exit_status()})")
                m = _failed(spec, mode, round_no, error)
            print(_progress(plan, m), flush=True)
            results.append(m)
    return results


def measure(plan: Plan, server: RunningServer, mode: str, round_no: int) -> Measurement:
    """Warm up, then one measured wrk run with the server tree's CPU read around it."""
    pin = plan.pinning
    spec = server.spec
    try:
        warmup = wrk_argv(plan.wrk, server.port, mode, plan.warmup, pin.client, pin.taskset)
        run_wrk(warmup, plan.warmup)
        argv = wrk_argv(plan.wrk, server.port, mode, plan.duration, pin.client, pin.taskset)
        cpu_before = read_cpu(server.process.pid)
        started = time.monotonic()
        result, _ = run_wrk(argv, plan.duration)
        wall = time.monotonic() - started
        cpu = read_cpu(server.process.pid) - cpu_before
    except WrkError as exc:
        return _failed(spec, mode, round_no, str(exc))
    if server.alive():
        error = None
    else:
        error = server.explain(f"server exited during the run ({server.exit_status()})")
    return Measurement(
        spec.name, spec.interface, mode, round_no, result, cpu.server, wall, error, cpu.others
    )


def _failed(spec: ServerSpec, mode: str, round_no: int, error: str) -> Measurement:
    return Measurement(spec.name, spec.interface, mode, round_no, None, 0.0, 0.0, error)


def _progress(plan: Plan, m: Measurement) -> str:
    where = f"[round {m.round}/{plan.rounds}] {m.server:<17} {m.mode:<9}"
    if m.wrk is None or m.error:
        return f"{where} FAILED: {report.condense(m.error or '')}"
    w = m.wrk
    return (
        f"{where} {w.rps:>9,.0f} req/s  p50 {w.p50_ms:6.2f} ms  p99 {w.p99_ms:6.2f} ms  "
        f"server CPU {m.server_cpu_pct:4.0f}%  wrk CPU {m.client_cpu_pct:4.0f}%  "
        f"other CPU {m.other_cpu_pct:3.0f}%  errors {w.errors}"
    )


def collect_meta(plan: Plan) -> dict[str, Any]:
    """The setup of this run, so figures from two runs can be told apart later."""
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "duration_s": plan.duration,
        "warmup_s": plan.warmup,
        "rounds": plan.rounds,
        "workers": plan.workers,
        "modes": list(plan.modes),
        "servers": [s.name for s in plan.specs],
        "server_cpus": sorted(plan.pinning.server) if plan.pinning.server else None,
        "wrk_cpus": sorted(plan.pinning.client) if plan.pinning.client else None,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": tools.wrk_version(plan.wrk),
        "poolwarden": _poolwarden_version(),
        "git_commit": _git_commit(),
        "peers": tools.peer_versions(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _poolwarden_version() -> str:
    try:
        return importlib.metadata.version("poolwarden")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=tools.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    specs = select_servers(args.only)
    if not specs:
        print(f"bench: --only {args.only!r} matches no server", file=sys.stderr)
        return 2
    try:
        found = tools.ensure_tools()
    except tools.ToolError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    plan = Plan(
        specs=specs,
        modes=tuple(_split(args.modes)),
        rounds=args.rounds,
        duration=args.duration,
        workers=args.workers,
        warmup=min(WARMUP_SECONDS, args.duration),
        wrk=found.wrk,
        pinning=plan_pinning(found.taskset, args.no_pin),
    )
    _announce(plan)
    # SIGTERM (a killed make) unwinds like Ctrl-C, so the running server is stopped too.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        measurements, skipped = run_rounds(plan)
    except KeyboardInterrupt:
        print("\nbench: interrupted; no report", file=sys.stderr)
        return 130
    return _report(plan, measurements, skipped, strict=args.strict)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _announce(plan: Plan) -> None:
    per_run = plan.warmup + plan.duration
    total = per_run * len(plan.specs) * len(plan.modes) * plan.rounds
    pin = plan.pinning
    where = (
        f"servers on cpu {sorted(pin.server)}, wrk on cpu {sorted(pin.client)}"
        if (pin.server and pin.client)
        else "unpinned"
    )
    print(
        f"bench: {len(plan.specs)} servers x {len(plan.modes)} modes x {plan.rounds} rounds, "
        f"{plan.duration:g}s runs (+{plan.warmup:g}s warm-up), {plan.workers} worker(s), "
        f"{where}; about {total / 60:.1f} min of load",
        flush=True,
    )


def _report(
    plan: Plan, measurements: list[Measurement], skipped: dict[str, str], strict: bool
) -> int:
    summaries = report.summarise(measurements)
    checks = report.evaluate_checks(summaries, {s.name for s in plan.specs}, skipped)
    print()
    print(
        f"Median of {plan.rounds} round(s), {plan.duration:g}s each, wrk -c 64 -t 1, "
        f"{plan.workers} worker process(es) per server"
    )
    print()
    interfaces = {s.name: s.interface for s in plan.specs}
    print(report.format_table(summaries, skipped, interfaces))
    print()
    print("Targets:")
    print(report.format_checks(checks))
    path = report.RESULTS_DIR / "latest.json"
    report.write_json(path, collect_meta(plan), measurements, summaries, checks, skipped)
    print(f"\nbench: wrote {path.relative_to(tools.REPO_ROOT)}")
    failed = any(c.status == "FAIL" for c in checks)
    return 1 if strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
