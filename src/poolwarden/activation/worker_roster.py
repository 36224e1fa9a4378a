"""What a pool's policy knows of its workers, and the recycle that replaces
them: one view per worker, the orphans kept for inspection, and the actions
that concern one worker or the orphans (Retire, Unretire, Drain, Kill,
RunOrphanAction, ReapOrphans).

```
 PoolMachine (pool_policy.py)                 WorkerRoster (this module)
   a worker spawned, Ready, debugged,  ─mark─▶   a WorkerView per worker, in the
   orphaned, ended, exited; recycle,             order they were started; the
   drain or kill some; abort a recycle           orphans' ids; a recycle under way
                                       ◀─answer─ serving, starting, any_ready, ...,
                                                 and Retire / Drain / Kill actions
```

`PoolMachine.handle` is the only caller. The roster keeps the books and
does what the machine decided to its workers' views: which worker a recycle
replaces, which old worker drains next, which replacements an aborted
recycle kills. Whether to recycle, stop or start at all is the machine's
rule, so the machine's rules read as rules rather than as loops over a
dict. Pure like the machine: no clock, no processes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal


class WorkerPhase(enum.Enum):
    """A worker as the pool's policy sees it (the driver's `WorkerState`)."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    EXITED = "exited"
    """Reaped (`WorkerEnded`), not yet forgotten (`WorkerExited`)."""


EndReason = Literal["recycle", "idle", "drain", "administrator", "shutdown", "signal"]
"""Why the pool asks a worker to end (a subset of the event log's `EndedBy`)."""


@dataclass(slots=True)
class WorkerView:
    """What the policy knows of one worker."""

    phase: WorkerPhase = WorkerPhase.STARTING
    retiring: bool = False
    """Being replaced by a recycle."""
    ever_ready: bool = False
    debugged: bool = False
    """A debugger holds (or held) it: its failures do not count."""
    asked: EndReason | Literal["kill"] | None = None
    """Why the pool asked it to end (the first reason wins); None: never asked."""


_LIVE = (WorkerPhase.STARTING, WorkerPhase.READY)


# what the pool does to one worker (actions of `pool_policy`) -------------------


@dataclass(frozen=True, slots=True)
class Retire:
    """Mark a worker as being replaced: it takes new connections only as a last resort."""

    id: int


@dataclass(frozen=True, slots=True)
class Unretire:
    """A recycle was aborted: the worker serves on."""

    id: int


@dataclass(frozen=True, slots=True)
class Drain:
    id: int
    reason: EndReason


@dataclass(frozen=True, slots=True)
class Kill:
    id: int
    reason: EndReason


@dataclass(frozen=True, slots=True)
class RecycleAborted:
    """A replacement failed before Ready: `kept` old workers keep serving."""

    kept: int


@dataclass(frozen=True, slots=True)
class RunOrphanAction:
    """Run `orphan_action_command` on orphan `id`."""

    id: int


@dataclass(frozen=True, slots=True)
class ReapOrphans:
    """End every orphan: the pool starts again or shuts down."""


@dataclass(slots=True)
class WorkerRoster:
    """The pool's workers by id, and its orphans; changed only by the machine."""

    views: dict[int, WorkerView] = field(default_factory=dict)
    """In the order they were started: the oldest retiring one drains first."""
    orphans: set[int] = field(default_factory=set)
    """Workers kept stopped for inspection, until they have exited: no
    capacity, and their failure is already counted."""
    recycling: bool = False
    """A recycle is under way (no other starts: `recycling.decide`)."""

    # what the machine asks

    @property
    def serving(self) -> list[int]:
        """Workers that count as capacity: starting or Ready, not being replaced."""
        return [id for id, view in self.views.items() if view.phase in _LIVE and not view.retiring]

    @property
    def any_ready(self) -> bool:
        return any(view.phase is WorkerPhase.READY for view in self.views.values())

    @property
    def starting(self) -> bool:
        """A worker that counts as capacity is on its way to Ready."""
        return any(self.views[id].phase is WorkerPhase.STARTING for id in self.serving)

    @property
    def any_starting(self) -> bool:
        """Some worker, a replacement's predecessor too, is on its way to Ready."""
        return any(view.phase is WorkerPhase.STARTING for view in self.views.values())

    @property
    def start_debugged(self) -> bool:
        """A worker a debugger holds has not reached Ready yet: it may take
        as long as the person at the debugger likes."""
        return any(
            view.debugged and view.phase is WorkerPhase.STARTING for view in self.views.values()
        )

    @property
    def retiree_draining(self) -> bool:
        """An old worker of a recycle is draining (its replacement not started
        yet when the recycle does not overlap)."""
        return any(
            view.retiring and view.phase is WorkerPhase.DRAINING for view in self.views.values()
        )

    def ready_serving(self) -> list[int]:
        """Ready workers that count as capacity, oldest first."""
        return [id for id in self.serving if self.views[id].phase is WorkerPhase.READY]

    def replaceable(self, ids: Iterable[int]) -> list[int]:
        """Those of `ids` a recycle may replace: a worker already being
        replaced, or gone, is not replaced twice."""
        return [
            id
            for id in ids
            if id in self.views
            and not self.views[id].retiring
            and self.views[id].phase is not WorkerPhase.EXITED
        ]

    # what the machine records

    def spawned(self, id: int, debugged: bool) -> None:
        self.views[id] = WorkerView(debugged=debugged)

    def debugged(self, id: int) -> None:
        if id in self.views:
            self.views[id].debugged = True

    def ready(self, id: int) -> WorkerView | None:
        view = self.views.get(id)
        if view is not None:
            view.phase = WorkerPhase.READY
            view.ever_ready = True
        return view

    def drain(self, id: int, reason: EndReason) -> list[Drain]:
        """Ask worker `id` to finish its requests and end (the first reason
        it was asked for stands); nothing if the roster does not know it."""
        view = self.views.get(id)
        if view is None:
            return []
        if view.phase in _LIVE:
            view.asked = view.asked or reason
            view.phase = WorkerPhase.DRAINING
        return [Drain(id, reason)]

    def drain_all(self, reason: EndReason) -> list[Drain]:
        return [drain for id in list(self.views) for drain in self.drain(id, reason)]

    def kill_all(self, reason: EndReason) -> list[Kill]:
        for view in self.views.values():
            view.asked = view.asked or reason
        return [Kill(id, reason) for id in self.views]

    # the recycle

    def recycle(self, old: list[int]) -> list[Retire]:
        """A recycle replaces `old`: each is marked retiring until it exits."""
        self.recycling = True
        for id in old:
            self.views[id].retiring = True
        return [Retire(id) for id in old]

    def replacement_ready(self) -> list[Drain]:
        """A replacement is Ready: the oldest worker it replaces drains."""
        oldest = next(
            (
                id
                for id, view in self.views.items()
                if view.retiring and view.phase is WorkerPhase.READY
            ),
            None,
        )
        actions = self.drain(oldest, "recycle") if oldest is not None else []
        self.settle_recycle()
        return actions

    def settle_recycle(self) -> None:
        """The recycle is over once none of its old workers is left."""
        if not any(
            view.retiring and view.phase is not WorkerPhase.EXITED for view in self.views.values()
        ):
            self.recycling = False

    def abort_recycle(self) -> list[Unretire | Kill | RecycleAborted]:
        """A replacement failed to start: the Ready old workers serve on, and
        the other replacements (which would fail alike) are killed."""
        self.recycling = False
        actions: list[Unretire | Kill | RecycleAborted] = []
        kept = 0
        for id, view in self.views.items():
            if view.retiring and view.phase is WorkerPhase.READY:
                view.retiring = False
                actions.append(Unretire(id))
                kept += 1
        for id, view in self.views.items():
            if not view.retiring and not view.ever_ready:
                view.asked = view.asked or "recycle"
                actions.append(Kill(id, "recycle"))
        return [*actions, RecycleAborted(kept)]

    def orphan(self, id: int) -> WorkerView | None:
        """Take worker `id` out of the workers and keep it as an orphan; its
        view, or None if it has already ended."""
        view = self.views.pop(id, None)
        if view is not None:
            self.orphans.add(id)
        return view

    def ended(self, id: int) -> WorkerView | None:
        """A worker was reaped: its view, marked exited (None if unknown)."""
        view = self.views.get(id)
        if view is not None:
            view.phase = WorkerPhase.EXITED
        return view

    def reap_orphans(self) -> list[ReapOrphans]:
        """The pool starts again or shuts down: what was kept for inspection goes."""
        return [ReapOrphans()] if self.orphans else []

    def forget_orphan(self, id: int) -> bool:
        """An orphan has exited: forget it; False if `id` is not an orphan."""
        if id not in self.orphans:
            return False
        self.orphans.discard(id)
        return True

    def exited(self, id: int) -> WorkerView:
        """A worker is gone: forget it; its last view (an exited one if unknown)."""
        return self.views.pop(id, None) or WorkerView(phase=WorkerPhase.EXITED)
