"""`poolwarden debug startup`: a pool's next worker starts under a debugger.

```
 Master (control API: debug startup / off / status) ──arm, disarm, status──▶ StartupDebugging
        │ arm: DebugArmed ─▶ PoolMachine; the worker it replaces ─▶ Recycler.note;
        │      its actions (a one-worker recycle, or a start) ─▶ Lifecycle.apply
 Lifecycle, starting a worker ──take()──▶ the DebugArm for it: its Boot names the
                                          debug adapter, its launch wrapper goes first
```

The arm is IIS's Image File Execution Options `Debugger` value: a debug
server the next worker opens before it loads the app, a command it starts
under, or both. It switches itself off after one worker unless kept. A
worker a debugger holds is no app failure: it has no start-up limit, no
pings, and its end does not count toward rapid-fail protection.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from poolwarden import channel as ch
from poolwarden.activation import pool_policy as policy
from poolwarden.events import catalog
from poolwarden.settings import PoolSettings

if TYPE_CHECKING:
    from poolwarden.master.pool import Pool

log = logging.getLogger("poolwarden")


@dataclass(frozen=True, slots=True)
class DebugArm:
    """What `poolwarden debug startup` armed: a debug server the next worker
    opens before it loads the app, a command it starts under (IIS's Image
    File Execution Options `Debugger`), or both."""

    adapter: str | None
    keep: bool
    since: float
    wrapper: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"under `{shlex.join(self.wrapper)}`"] if self.wrapper else []
        if self.adapter:
            parts.append(f"waiting for {self.adapter}")
        return " and ".join(parts)

    def launch(self, boot: ch.Boot, settings: PoolSettings) -> tuple[ch.Boot, PoolSettings]:
        """The Boot message and settings a worker started under this arm gets."""
        if self.adapter:
            boot = msgspec.structs.replace(boot, debug=self.adapter)
        if self.wrapper:
            settings = msgspec.structs.replace(settings, launch_wrapper=self.wrapper)
        return boot, settings


class StartupDebugging:
    """One pool's startup debugging: armed or not, and its debugged workers."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.armed: DebugArm | None = None
        """The next worker starts under a debugger."""

    def arm(self, adapter: str | None, keep: bool, wrapper: tuple[str, ...] = ()) -> None:
        """The next worker waits for a debugger before it loads the app, or
        starts under `wrapper` (or both). An always-running pool gets that
        worker now (it replaces the oldest, with overlap); an on-demand pool
        when the next request arrives."""
        pool = self.pool
        try:
            actions = pool.machine.handle(policy.DebugArmed())
        except policy.IllegalTransition:
            raise ValueError(
                f"pool {pool.name!r} is disabled by rapid-fail protection; "
                "start it again with the debugger armed (--start)"
            ) from None
        armed = DebugArm(adapter, keep, time.time(), wrapper)
        self.armed = armed
        pool.last_event = f"debug startup armed ({armed.describe()})"
        log.info("pool %s: the next worker starts %s", pool.name, armed.describe())
        for action in actions:
            replaced = pool.find_worker(action.id) if isinstance(action, policy.Retire) else None
            if replaced is not None:
                pool.recycler.note(
                    replaced, "debug startup", "on_demand", catalog.RECYCLE_ADMINISTRATOR
                )
        pool.lifecycle.apply(actions)

    def disarm(self) -> None:
        self.armed = None

    def take(self) -> DebugArm | None:
        """The arm for the worker about to start; one worker, then it
        switches itself off (unless kept)."""
        armed = self.armed
        if armed is not None and not armed.keep:
            self.armed = None
        return armed

    def status(self) -> dict[str, object]:
        armed = self.armed
        return {
            "pool": self.pool.name,
            "armed": None
            if armed is None
            else {
                "adapter": armed.adapter,
                "keep": armed.keep,
                "since": armed.since,
                "wrapper": list(armed.wrapper) or None,
            },
            "workers": [
                {
                    "pid": worker.pid,
                    "python_pid": worker.python_pid,
                    "adapter": worker.debugging,
                    "wrapper": list(worker.settings.launch_wrapper) or None,
                    "address": worker.debug_address,
                    "since": worker.debug_since,
                    "state": worker.state.value,
                }
                for worker in self.pool.workers
                if worker.debugging and worker.returncode is None
            ],
        }
