"""CPU accounting: what the server used, and what everything else on the machine used.

Both come from one pass over /proc (via psutil), read just before and just after a
measured run. The second figure tells whether the machine was quiet: CPU taken by other
processes (a test suite, a build) during a run makes its figures noisy, and the report
says so instead of leaving the reader to guess why two runs differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds (user+system) at one moment; subtract two readings."""

    server: float
    others: float

    def __sub__(self, earlier: CpuReading) -> CpuReading:
        return CpuReading(self.server - earlier.server, self.others - earlier.others)


def read_cpu(server_pid: int) -> CpuReading:
    """CPU time of the server's process tree, and of every other process but this one.

    Each process counts its own time plus that of the children it has reaped. So a
    process that exits during the run is still counted, exactly once: its total moves to
    its parent's reaped-children time, and the difference of two readings keeps only the
    part spent between them. This harness is left out: it idles while wrk runs, and wrk,
    its child, is measured on its own (see ``bench.wrk``).
    """
    totals: dict[int, float] = {}
    parents: dict[int, int] = {}
    for proc in psutil.process_iter(["ppid", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is None:
            continue
        totals[proc.pid] = times.user + times.system + times.children_user + times.children_system
        parents[proc.pid] = proc.info["ppid"]
    tree = _descendants(server_pid, parents) | {server_pid}
    server = sum(totals.get(pid, 0.0) for pid in tree)
    me = os.getpid()
    others = sum(t for pid, t in totals.items() if pid not in tree and pid != me)
    return CpuReading(server=server, others=others)


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found
