"""Drive a server with wrk and turn wrk's text report into numbers.

wrk has no machine-readable output without a Lua script, and its text report is stable
across the 4.x releases Debian ships, so parsing the text keeps the harness free of
scripts while still reading every figure we need.
"""

from __future__ import annotations

import re
import resource
import subprocess
from dataclasses import asdict, dataclass

CONNECTIONS = 64
THREADS = 1
# Beyond the run's own length: time for wrk to start, connect and print its report.
WRK_GRACE_SECONDS = 30

MODES: dict[str, list[str]] = {
    "keepalive": [],
    "close": ["-H", "Connection: close"],
}

_UNIT_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY_PCT = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)


class WrkError(RuntimeError):
    """wrk failed, timed out, or printed a report we cannot read."""


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run. Latencies are in milliseconds."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    non_2xx: int
    client_cpu_seconds: float

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.timeout_errors
            + self.non_2xx
        )

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "errors": self.errors}


def wrk_argv(
    wrk: str, port: int, mode: str, duration: float, cpus: set[int] | None, taskset: str | None
) -> list[str]:
    """The wrk command line for one run, pinned to ``cpus`` when pinning is on."""
    argv = [
        wrk,
        "-c",
        str(CONNECTIONS),
        "-t",
        str(THREADS),
        "-d",
        f"{duration:g}s",
        "--latency",
        *MODES[mode],
        f"http://127.0.0.1:{port}/",
    ]
    if cpus and taskset:
        argv = [taskset, "-c", ",".join(map(str, sorted(cpus))), *argv]
    return argv


def run_wrk(argv: list[str], duration: float) -> tuple[WrkResult, str]:
    """Run wrk to completion (bounded by a timeout) and return its figures and raw text.

    Client CPU comes from RUSAGE_CHILDREN: the servers are our children too, but they
    are still running, so only wrk is reaped (and counted) between the two readings.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        completed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + WRK_GRACE_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration + WRK_GRACE_SECONDS:g}s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise WrkError(f"wrk exited {completed.returncode}: {completed.stderr.strip()[-500:]}")
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_wrk(completed.stdout, client_cpu), completed.stdout


def parse_wrk(text: str, client_cpu_seconds: float = 0.0) -> WrkResult:
    """Read the figures from wrk's ``--latency`` report; error lines are absent when zero."""
    rps = _RPS.search(text)
    requests = _REQUESTS.search(text)
    percentiles = {m.group(1): _to_ms(m.group(2), m.group(3)) for m in _LATENCY_PCT.finditer(text)}
    if not rps or not requests or "50" not in percentiles or "99" not in percentiles:
        raise WrkError(f"cannot read wrk's report:\n{text.strip()[-1000:]}")
    socket_errors = _SOCKET_ERRORS.search(text)
    connect, read, write, timeout = (
        (int(g) for g in socket_errors.groups()) if socket_errors else (0, 0, 0, 0)
    )
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=_to_ms(requests.group(2), requests.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeout_errors=timeout,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        client_cpu_seconds=client_cpu_seconds,
    )


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_TO_MS[unit]
