"""Summarise the rounds: medians per (server, mode), the table, the target checks, JSON.

The median over rounds, not the mean, so that one round disturbed by the machine does
not move the figure; every round's raw figures still go into the JSON.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.wrk import WrkResult

BASELINE = "gunicorn-sync"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Above this share of its core, wrk itself may be what limits the request rate.
SATURATED_PCT = 90.0
# CPU used by processes other than the server and wrk, above this share of one core,
# means the run was disturbed.
DISTURBED_PCT = 10.0


@dataclass(frozen=True)
class Measurement:
    """One measured wrk run against one server in one mode, in one round."""

    server: str
    interface: str
    mode: str
    round: int
    wrk: WrkResult | None
    server_cpu_seconds: float
    wall_seconds: float
    error: str | None = None
    other_cpu_seconds: float = 0.0

    @property
    def server_cpu_pct(self) -> float:
        return 100.0 * self.server_cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def client_cpu_pct(self) -> float:
        if not self.wrk or not self.wall_seconds:
            return 0.0
        return 100.0 * self.wrk.client_cpu_seconds / self.wall_seconds

    @property
    def other_cpu_pct(self) -> float:
        """CPU used by other processes during the run: how disturbed the machine was."""
        return 100.0 * self.other_cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "interface": self.interface,
            "mode": self.mode,
            "round": self.round,
            "wrk": self.wrk.to_dict() if self.wrk else None,
            "server_cpu_seconds": self.server_cpu_seconds,
            "server_cpu_pct": self.server_cpu_pct,
            "client_cpu_pct": self.client_cpu_pct,
            "other_cpu_seconds": self.other_cpu_seconds,
            "other_cpu_pct": self.other_cpu_pct,
            "wall_seconds": self.wall_seconds,
            "error": self.error,
        }


@dataclass
class Summary:
    """Medians over the rounds that produced figures; errors are totals over all rounds."""

    server: str
    interface: str
    mode: str
    rounds_ok: int
    rounds_failed: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_pct: float
    client_cpu_pct: float
    other_cpu_pct: float
    errors: int
    ratio_to_baseline: float | None = None
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    """A target the server must meet: PASS, FAIL, or N/A when a figure is missing."""

    description: str
    status: str
    detail: str


def summarise(measurements: Sequence[Measurement]) -> list[Summary]:
    """One summary per (server, mode), in first-seen order, with ratios to the baseline."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.server, m.mode), []).append(m)
    summaries = [_summarise_group(group) for group in groups.values()]
    baseline = {s.mode: s.rps for s in summaries if s.server == BASELINE and s.rounds_ok}
    for s in summaries:
        if s.rounds_ok and baseline.get(s.mode):
            s.ratio_to_baseline = s.rps / baseline[s.mode]
    return summaries


def _summarise_group(group: list[Measurement]) -> Summary:
    ok = [m for m in group if m.wrk is not None and m.error is None]
    wrks = [m.wrk for m in ok if m.wrk is not None]

    def median(values: Iterable[float]) -> float:
        values = list(values)
        return statistics.median(values) if values else 0.0

    first = group[0]
    return Summary(
        server=first.server,
        interface=first.interface,
        mode=first.mode,
        rounds_ok=len(ok),
        rounds_failed=len(group) - len(ok),
        rps=median(w.rps for w in wrks),
        p50_ms=median(w.p50_ms for w in wrks),
        p99_ms=median(w.p99_ms for w in wrks),
        server_cpu_pct=median(m.server_cpu_pct for m in ok),
        client_cpu_pct=median(m.client_cpu_pct for m in ok),
        other_cpu_pct=median(m.other_cpu_pct for m in ok),
        errors=sum(m.wrk.errors for m in group if m.wrk is not None),
        failures=[f"round {m.round}: {m.error}" for m in group if m.error],
    )


def format_table(
    summaries: Sequence[Summary], skipped: dict[str, str], interfaces: dict[str, str]
) -> str:
    """A markdown table (aligned, so it also reads as plain text) plus notes on failures.

    A server that never started still gets a row, so a pasted table shows it was tried.
    """
    header = [
        "server",
        "iface",
        "mode",
        "req/s",
        "p50 ms",
        "p99 ms",
        "server CPU",
        "wrk CPU",
        "other CPU",
        "errors",
        f"vs {BASELINE}",
    ]
    measured = {s.server for s in summaries}
    rows = [_row(s) for s in summaries]
    rows += [
        [name, interfaces.get(name, "?"), "-", "did not start", *[""] * (len(header) - 4)]
        for name in skipped
        if name not in measured
    ]
    out = _markdown(header, rows, numeric=set(range(3, len(header))))
    notes = [f"- {s.server} {s.mode}: {condense(f)}" for s in summaries for f in s.failures]
    notes += [f"- {name}: skipped: {condense(reason)}" for name, reason in skipped.items()]
    if any(s.rounds_ok and s.client_cpu_pct >= SATURATED_PCT for s in summaries):
        notes.append(
            f"- * wrk used >= {SATURATED_PCT:.0f}% of its core: the client may be the limit, "
            "so that req/s is a lower bound for the server"
        )
    if any(s.rounds_ok and s.other_cpu_pct >= DISTURBED_PCT for s in summaries):
        notes.append(
            f"- ! other processes used >= {DISTURBED_PCT:.0f}% of a core during these runs: "
            "the machine was not quiet, so those figures are noisy"
        )
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


def _markdown(header: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)
    )
    return [line(header), f"|{rule}|", *(line(r) for r in rows)]


def condense(reason: str) -> str:
    """The reason's summary line plus the log's last line, which usually names the error."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    if len(lines) < 2:
        return lines[0] if lines else ""
    return f"{lines[0]} ... {lines[-1]}"


def _row(s: Summary) -> list[str]:
    if not s.rounds_ok:
        return [s.server, s.interface, s.mode, "failed", "", "", "", "", "", str(s.errors), ""]
    ratio = f"{s.ratio_to_baseline:.2f}x" if s.ratio_to_baseline is not None else "n/a"
    saturated = " *" if s.client_cpu_pct >= SATURATED_PCT else ""
    return [
        s.server,
        s.interface,
        s.mode,
        f"{s.rps:,.0f}",
        f"{s.p50_ms:.2f}",
        f"{s.p99_ms:.2f}",
        f"{s.server_cpu_pct:.0f}%",
        f"{s.client_cpu_pct:.0f}%{saturated}",
        f"{s.other_cpu_pct:.0f}%{' !' if s.other_cpu_pct >= DISTURBED_PCT else ''}",
        str(s.errors),
        ratio,
    ]


def evaluate_checks(
    summaries: Sequence[Summary], selected: set[str], skipped: dict[str, str]
) -> list[Check]:
    """The poolwarden targets. A missing peer is N/A; a poolwarden that did not run is FAIL."""
    by_key = {(s.server, s.mode): s for s in summaries}
    checks = [
        _ratio_check(
            by_key, selected, skipped, ("poolwarden-wsgi", "granian-wsgi"), "keepalive", 0.7
        ),
        _ratio_check(by_key, selected, skipped, ("poolwarden-asgi", "uvicorn"), "keepalive", 0.9),
        _ratio_check(by_key, selected, skipped, ("poolwarden-wsgi", "gunicorn-sync"), "close", 1.2),
    ]
    checks.append(_zero_errors_check(summaries, selected, skipped))
    return checks


def _ratio_check(
    by_key: dict[tuple[str, str], Summary],
    selected: set[str],
    skipped: dict[str, str],
    pair: tuple[str, str],
    mode: str,
    factor: float,
) -> Check:
    ours, peer = pair
    description = f"{ours} {mode} >= {factor:g} x {peer} {mode}"
    if ours not in selected:
        return Check(description, "N/A", f"{ours} not selected")
    if ours in skipped:
        return Check(description, "FAIL", f"{ours} did not start")
    if peer not in selected or peer in skipped:
        reason = "not selected" if peer not in selected else "did not start"
        return Check(description, "N/A", f"{peer} {reason}")
    mine, theirs = by_key.get((ours, mode)), by_key.get((peer, mode))
    if mine is None or theirs is None:
        return Check(description, "N/A", f"mode {mode} not run")
    if not mine.rounds_ok:
        return Check(description, "FAIL", f"{ours} {mode} produced no figures")
    if not theirs.rounds_ok:
        return Check(description, "N/A", f"{peer} {mode} produced no figures")
    ratio = mine.rps / theirs.rps
    status = "PASS" if ratio >= factor else "FAIL"
    detail = f"{mine.rps:,.0f} vs {theirs.rps:,.0f} req/s = {ratio:.2f}x (need {factor:g}x)"
    return Check(description, status, detail)


def _zero_errors_check(
    summaries: Sequence[Summary], selected: set[str], skipped: dict[str, str]
) -> Check:
    description = "zero errors in poolwarden runs"
    ours = [s for s in summaries if s.server.startswith("poolwarden")]
    not_started = sorted(n for n in skipped if n.startswith("poolwarden"))
    if not ours and not not_started:
        return Check(description, "N/A", "poolwarden not selected")
    problems = [f"{n} did not start" for n in not_started]
    problems += [f"{s.server} {s.mode}: {s.errors} errors" for s in ours if s.errors]
    problems += [f"{s.server} {s.mode}: {len(s.failures)} failed runs" for s in ours if s.failures]
    if problems:
        return Check(description, "FAIL", "; ".join(problems))
    runs = sum(s.rounds_ok for s in ours)
    return Check(description, "PASS", f"{runs} runs, 0 errors")


def format_checks(checks: Sequence[Check]) -> str:
    width = max(len(c.description) for c in checks)
    return "\n".join(f"{c.status:<4}  {c.description:<{width}}  {c.detail}" for c in checks)


def write_json(
    path: Path,
    meta: dict[str, Any],
    measurements: Sequence[Measurement],
    summaries: Sequence[Summary],
    checks: Sequence[Check],
    skipped: dict[str, str],
) -> None:
    """Everything needed to compare two runs later: setup, raw rounds, medians, checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "skipped": skipped,
        "summary": [asdict(s) for s in summaries],
        "checks": [asdict(c) for c in checks],
        "runs": [m.to_dict() for m in measurements],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
