"""The memory and CPU of worker processes, read with psutil.

```
 Master, every RSS_SAMPLE_EVERY ──sample(pools)──▶ ResourceMeter ──▶ WorkerProcess.last_rss
                                                        │               (and last_uss when the pool
                                                        │                recycles on private memory)
 WorkersView (`poolwarden wp`) ──usage(pid)─────────────┘ rss, CPU % since the last look
```

psutil measures CPU % between two looks at the same `psutil.Process`, so
one is kept per pid: the periodic sample and `poolwarden wp` are looks at
it alike. A worker's last RSS is what the event of a worker killed from
outside (or by the OOM killer) says of its size.
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from poolwarden.master.pool import Pool


def private_memory(pid: int) -> int | None:
    """A process's USS: what it alone holds (costlier to read than RSS)."""
    try:
        uss: int = psutil.Process(pid).memory_full_info().uss
    except psutil.Error:
        return None
    return uss


class ResourceMeter:
    """RSS and CPU % by pid, for as long as each process lives."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def usage(self, pid: int) -> tuple[int | None, float | None]:
        """RSS and CPU % since the last look (psutil needs two samples)."""
        try:
            process = self._processes.get(pid)
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            return process.memory_info().rss, process.cpu_percent(interval=None)
        except psutil.Error:
            self._processes.pop(pid, None)
            return None, None

    def sample(self, pools: Iterable[Pool]) -> None:
        """Every live worker's resident memory, and its private memory where
        its pool recycles on it."""
        for pool in pools:
            for worker in pool.workers:
                if worker.returncode is None:
                    worker.last_rss = self.usage(worker.python_pid)[0]
                    if pool.settings.recycle_private_memory:
                        worker.last_uss = private_memory(worker.python_pid)
