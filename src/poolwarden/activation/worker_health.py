"""One worker's health timing, pure: when to ping it, when it is hung, when
its start-up took too long.

```
 HealthTimer (driver, master/health_timer.py)           WorkerHealth (this module)
   spawned(now) ready(now) pong(seq) debugged()    ─▶     phase, the ping outstanding,
   draining() ended(), and tick(now) at `deadline`        three deadlines (start-up,
   ◀── SendPing(seq) | DeclareHung(seq) | StartupTimedOut       next ping, hang)
       and `deadline`: the one time to wake it at
```

The driver keeps one loop timer at `deadline` and calls `tick` when it
fires; it sends the pings and ends (or orphans) a worker judged hung or
timed out. This module reads no clock: every time is an argument, so its
tests run on a fake one (tests/test_worker_health.py).

The rules, with IIS's names and defaults:

- **Start-up time limit** (`startupTimeLimit`, 90 s): a worker not Ready
  `startup_time_limit` seconds after it was spawned has timed out. 0 turns
  the limit off.
- **Pings** (`pingInterval` 30 s, `pingResponseTime` 90 s): only a Ready
  worker is pinged, every `ping_interval` from when it became Ready; at
  most one ping is outstanding (a turn that finds one unanswered sends
  none); a ping not answered within `ping_response_time` declares the
  worker hung. A pong counts whenever it arrives before the verdict:
  verdicts are reached only by `tick`, as the driver's timer fires.
- **Draining**: no new pings; the one outstanding keeps its deadline.
- **Debugged** (`poolwarden debug`): a debugger may stop the worker anywhere
  for as long as a person likes, so from then on nothing is judged: a
  stopped thread is no hang, a slow start no failure.
- **Verdicts are final**: after `StartupTimedOut` or `DeclareHung` nothing
  more is judged (the driver is ending the worker); after `ended` (exited,
  or orphaned) neither.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """The settings the health policy reads (from `PoolSettings`, IIS's defaults)."""

    startup_time_limit: float = 90.0
    """0: no limit."""
    pinging: bool = True
    ping_interval: float = 30.0
    """0: no pings."""
    ping_response_time: float = 90.0

    @property
    def pings(self) -> bool:
        return self.pinging and self.ping_interval > 0


class HealthPhase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    DONE = "done"
    """Judged (hung, timed out) or ended: nothing more to decide."""


# actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPing:
    seq: int


@dataclass(frozen=True, slots=True)
class DeclareHung:
    """Ping `seq` went unanswered for `ping_response_time`: end the worker
    with its stacks (or keep it stopped as an orphan)."""

    seq: int


@dataclass(frozen=True, slots=True)
class StartupTimedOut:
    """Not Ready within the start-up time limit: a start-up failure."""


HealthAction = SendPing | DeclareHung | StartupTimedOut


class WorkerHealth:
    """The health timing of one worker; each input returns what to do now,
    and `deadline` says when to call `tick` next."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.phase = HealthPhase.STARTING
        self.under_debugger = False
        """A debugger holds (or held) it: suspended for good."""
        self.seq = 0
        """The last ping's sequence number."""
        self.outstanding: int | None = None
        """The ping sent and not yet answered."""
        self._startup_at: float | None = None
        self._ping_at: float | None = None
        self._hang_at: float | None = None

    @property
    def deadline(self) -> float | None:
        """When `tick` has something to decide; None: nothing until the next input."""
        pending = [at for at in (self._startup_at, self._ping_at, self._hang_at) if at is not None]
        return min(pending, default=None)

    # inputs

    def spawned(self, now: float, *, debugged: bool = False) -> list[HealthAction]:
        """The process was started (`debugged`: under a debugger from the first line)."""
        self.under_debugger = self.under_debugger or debugged
        limit = self.config.startup_time_limit
        if self.phase is HealthPhase.STARTING and not self.under_debugger and limit > 0:
            self._startup_at = now + limit
        return []

    def ready(self, now: float) -> list[HealthAction]:
        """The app is loaded: the start-up limit no longer applies, pings begin."""
        if self.phase is not HealthPhase.STARTING:
            return []
        self.phase = HealthPhase.READY
        self._startup_at = None
        if self.config.pings and not self.under_debugger:
            self._ping_at = now + self.config.ping_interval
        return []

    def pong(self, seq: int) -> list[HealthAction]:
        """The answer to ping `seq`; an answer to an older one says nothing of now."""
        if seq == self.outstanding and self.phase is not HealthPhase.DONE:
            self.outstanding = None
            self._hang_at = None
        return []

    def debugged(self) -> list[HealthAction]:
        """A debugger took hold: every limit is suspended, for good."""
        self.under_debugger = True
        self.outstanding = None
        self._startup_at = self._ping_at = self._hang_at = None
        return []

    def draining(self) -> list[HealthAction]:
        """Asked to finish and exit: no new pings (the outstanding one still counts)."""
        if self.phase in (HealthPhase.STARTING, HealthPhase.READY):
            self.phase = HealthPhase.DRAINING
            self._startup_at = self._ping_at = None
        return []

    def ended(self) -> list[HealthAction]:
        """Exited, or kept stopped as an orphan: nothing more to judge."""
        self._done()
        return []

    def tick(self, now: float) -> list[HealthAction]:
        """The time is `now`: whatever deadline has come is decided. Early or
        late calls are harmless: an early one decides nothing, a late one
        sends one ping (not one per missed interval) and plans from `now`."""
        if self._startup_at is not None and now >= self._startup_at:
            return self._judge(StartupTimedOut())
        if self._hang_at is not None and now >= self._hang_at:
            assert self.outstanding is not None
            return self._judge(DeclareHung(self.outstanding))
        if self._ping_at is not None and now >= self._ping_at:
            self._ping_at = now + self.config.ping_interval
            if self.outstanding is None:
                self.seq += 1
                self.outstanding = self.seq
                self._hang_at = now + self.config.ping_response_time
                return [SendPing(self.seq)]
        return []

    # helpers

    def _judge(self, verdict: HealthAction) -> list[HealthAction]:
        self._done()
        return [verdict]

    def _done(self) -> None:
        self.phase = HealthPhase.DONE
        self._startup_at = self._ping_at = self._hang_at = None
