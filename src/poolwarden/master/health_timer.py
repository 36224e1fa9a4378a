"""The driver side of a worker's health: pings and the start-up time limit.

```
 WorkerProcess ──spawned, ready, pong, draining, debugged, ended──▶ HealthTimer
                                                                      │  ▲
                             WorkerHealth (activation.worker_health) ◀┘  │ actions, deadline
 WorkerProcess ◀── send_ping(seq) ─────────── SendPing                   │
 WorkerProcess ◀── failed("hang") ─────────── DeclareHung (logged here)  │
 WorkerProcess ◀── failed("startup_time_limit") StartupTimedOut (logged) │
 one loop timer per worker, at the policy's next deadline ──tick(now)────┘
```

The policy decides when to ping, when a worker is hung, and when it is
too slow to start; it never reads the clock. This driver passes it the
loop's time, performs what it decides, and keeps one timer per worker at
its next deadline. What a failed worker suffers (stacks dumped, killed, or
kept stopped) is the worker handle's business: `failed` says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from poolwarden.activation import worker_health as health
from poolwarden.events.classify import EndedBy

if TYPE_CHECKING:
    from poolwarden.settings import PoolSettings

log = logging.getLogger("poolwarden")


def health_config(settings: PoolSettings) -> health.HealthConfig:
    """The settings a worker's health policy (`activation.worker_health`) decides by."""
    return health.HealthConfig(
        startup_time_limit=settings.startup_time_limit,
        pinging=settings.pinging_enabled,
        ping_interval=settings.ping_interval,
        ping_response_time=settings.ping_response_time,
    )


class HealthTimer:
    """One worker's health policy, woken by one loop timer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: PoolSettings,
        *,
        send_ping: Callable[[int], None],
        failed: Callable[[EndedBy], None],
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.send_ping = send_ping
        self.failed = failed
        self.policy = health.WorkerHealth(health_config(settings))
        """When to ping it, and whether it is hung or too slow to start."""
        self.pid = 0
        """The worker's, for the log (known once it is spawned)."""
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None

    # what happened to the worker

    def spawned(self, pid: int, *, debugged: bool) -> None:
        self.pid = pid
        self._follow(self.policy.spawned(self.loop.time(), debugged=debugged))

    def ready(self) -> None:
        self._follow(self.policy.ready(self.loop.time()))

    def pong(self, seq: int) -> None:
        self._follow(self.policy.pong(seq))

    def draining(self) -> None:
        self._follow(self.policy.draining())

    def debugged(self) -> None:
        """A debugger holds it: a stopped thread is no hang, a slow start no failure."""
        self._follow(self.policy.debugged())

    def ended(self) -> None:
        self._follow(self.policy.ended())

    # the driver

    def _follow(self, actions: list[health.HealthAction]) -> None:
        """Perform what the policy decided, and wake it again at its next
        deadline: one loop timer per worker."""
        for action in actions:
            match action:
                case health.SendPing(seq=seq):
                    self.send_ping(seq)
                case health.DeclareHung():
                    log.error(
                        "pool %s: worker %d did not answer a ping within %gs: hung; dumping its "
                        "stacks (SIGABRT), then killing it",
                        self.settings.name,
                        self.pid,
                        self.settings.ping_response_time,
                    )
                    self.failed("hang")
                case health.StartupTimedOut():
                    log.error(
                        "pool %s: worker %d was not ready within the start-up time limit (%gs)",
                        self.settings.name,
                        self.pid,
                        self.settings.startup_time_limit,
                    )
                    self.failed("startup_time_limit")
        deadline = self.policy.deadline
        if deadline == self._wake_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._due)

    def _due(self) -> None:
        """The timer fired: its deadline has come by the loop's clock (which
        may run it a clock resolution early, hence the max)."""
        assert self._wake_at is not None
        now = max(self.loop.time(), self._wake_at)
        self._timer = self._wake_at = None
        self._follow(self.policy.tick(now))
