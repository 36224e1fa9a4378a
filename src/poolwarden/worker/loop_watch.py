"""Watching an ASGI worker's event loop for stalls, from a thread beside it.

```
 event loop ── a beat every BEAT_INTERVAL ──▶ Heartbeat.due  (one float store)
                                                  │ read
 watchdog thread ── every loop_lag_warning / 4 ── observe(state, now, due)
      │ CAPTURE: the loop thread's stack (sys._current_frames), its request
      │ REPORT: LoopLag on the channel (MSG_DONTWAIT; dropped if full)
      │ LoopStall(blocked) as a stall begins and ends: the master's dispatch
      ▼
 master ── event 2041 loop_lag (pool, pid, stack, how long)
```

A loop that runs a blocking call (file or network I/O, CPU work) inside async
code stops every other request of its worker. Pings notice it only when the
stall is long enough to be a hang; this notices any stall longer than
`loop_lag_warning` and says *where*: the watchdog is a thread, so it runs
while the loop is stuck and can read the loop thread's Python stack at that
moment, the line that blocks.

The loop's only work is one timer callback every `BEAT_INTERVAL` storing when
the next one is due; nothing is done per request. A beat that comes late by
`loop_lag_warning` or more also records by how much, which is how the report
learns the stall's whole length.

Decisions are pure (`observe`, a function of the state, the time and the
heartbeat), so the rules can be tested without threads or clocks:

- a stall is reported once: its stack is taken when it is seen and the one
  report leaves when the loop runs again, saying how long it was blocked in
  all; a stall still going `HOLD_LIMIT` after it was seen is reported as it
  stands (its end then goes unreported);
- at most one stall is reported per `REPORT_INTERVAL`: a loop that blocks all
  the time cannot flood the event log; the next report counts the stalls
  left out (`skipped`).

A stall inside C code that holds the GIL (a regular expression that
backtracks for minutes) keeps the watchdog from running too: it is seen late
or not at all, and the ping time-out and `poolwarden stack` (faulthandler,
which needs no GIL) are the tools for it.
"""

from __future__ import annotations

import asyncio
import enum
import math
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

import msgspec

from poolwarden import channel as ch
from poolwarden.scoreboard import Scoreboard
from poolwarden.worker.task_dump import TASK_NAME_PREFIX

BEAT_INTERVAL = 0.1
"""Seconds between the loop's beats: ten timer callbacks a second, nothing
next to a request. The lag is measured from when a beat was due, so this
bounds only how much of a stall's start can go unseen."""
MIN_CHECK_INTERVAL = 0.01
"""The watchdog looks at the heartbeat every `loop_lag_warning / 4`, but not
more often than this."""
REPORT_INTERVAL = 5.0
"""At most one stall report per this many seconds per worker."""
HOLD_LIMIT = 5.0
"""A stall still going this long after its stack was taken is reported
without waiting for its end: an operator hears of it while it lasts, and
long before the ping time-out (90 s, IIS's default) ends the worker."""
MAX_FRAMES = 50
"""Frames of the loop thread's stack kept, the innermost ones (the blocking
line is at that end)."""


class Step(enum.Enum):
    """What the watchdog does after one look at the heartbeat."""

    NOTHING = "nothing"
    CAPTURE = "capture"
    """A stall to report began: take the loop thread's stack now, hold the report."""
    REPORT_ENDED = "report_ended"
    """The loop runs again: send the held report with the stall's length."""
    REPORT_BLOCKED = "report_blocked"
    """Still blocked `HOLD_LIMIT` after the capture: send the report now."""


@dataclass(frozen=True, slots=True)
class WatchState:
    stall_due: float | None = None
    """When the beat the loop is late for was due: names the stall under
    way (None: the loop is keeping time)."""
    holding: bool = False
    """This stall's stack was taken and its report is not sent yet."""
    captured_at: float = 0.0
    last_capture: float = -math.inf
    """When the last reported stall was captured (the rate limit's clock)."""
    skipped: int = 0
    """Stalls seen but not reported since the last capture."""


def check_interval(threshold: float) -> float:
    """How often the watchdog looks: a stall is seen at most a quarter of
    `loop_lag_warning` late."""
    return max(MIN_CHECK_INTERVAL, threshold / 4)


def observe(
    state: WatchState,
    now: float,
    due: float,
    threshold: float,
    *,
    every: float = REPORT_INTERVAL,
    hold: float = HOLD_LIMIT,
) -> tuple[WatchState, Step]:
    """One look at the heartbeat: the loop's next beat was due at `due`.

    A new `due` means the loop ran since the last look, ending any stall;
    the following look judges whether it stalled again.
    """
    if state.stall_due is not None and due != state.stall_due:
        step = Step.REPORT_ENDED if state.holding else Step.NOTHING
        return replace(state, stall_due=None, holding=False), step
    if state.stall_due is None:
        if now - due < threshold:
            return state, Step.NOTHING
        if now - state.last_capture < every:
            return replace(state, stall_due=due, skipped=state.skipped + 1), Step.NOTHING
        return (
            replace(
                state, stall_due=due, holding=True, captured_at=now, last_capture=now, skipped=0
            ),
            Step.CAPTURE,
        )
    if state.holding and now - state.captured_at >= hold:
        return replace(state, holding=False), Step.REPORT_BLOCKED
    return state, Step.NOTHING


def stack_of(thread_ident: int, limit: int = MAX_FRAMES) -> list[ch.Frame]:
    """A thread's Python stack now, innermost first (empty if it has none)."""
    frame = sys._current_frames().get(thread_ident)
    if frame is None:
        return []
    summary = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=limit, lookup_lines=False
    )
    return [ch.Frame(entry.filename, entry.lineno or 0, entry.name) for entry in summary]


class Heartbeat:
    """The loop's side: a timer callback that says when the next is due.

    Written by the loop thread, read by the watchdog; each field is one
    attribute store, atomic under the GIL.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        self.loop = loop
        self.threshold = threshold
        self.due = time.monotonic() + BEAT_INTERVAL
        self.last_late: tuple[float, float] = (0.0, 0.0)
        """(due, lateness) of the last beat late by `threshold` or more."""
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.due = time.monotonic() + BEAT_INTERVAL
        self.handle = self.loop.call_later(BEAT_INTERVAL, self._beat)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _beat(self) -> None:
        now = time.monotonic()
        late = now - self.due
        if late >= self.threshold:
            self.last_late = (self.due, late)
        self.due = now + BEAT_INTERVAL
        self.handle = self.loop.call_later(BEAT_INTERVAL, self._beat)


def send_nowait(channel: socket.socket, message: ch.ToMaster) -> bool:
    """Send without ever blocking the caller; False if it was dropped."""
    try:
        channel.send(ch.encode(message), socket.MSG_DONTWAIT)
    except OSError:
        return False
    return True


def request_of(
    loop: asyncio.AbstractEventLoop, scoreboard: Scoreboard | None
) -> tuple[str, str, str]:
    """(method, path, client) of the request whose task the loop is running,
    from the task's name and the scoreboard; empty strings when it cannot
    tell (a callback rather than a task, or a request without a slot)."""
    unknown = ("", "", "")
    task = asyncio.current_task(loop)
    if task is None or scoreboard is None:
        return unknown
    name = task.get_name()
    suffix = name[len(TASK_NAME_PREFIX) :]
    if not name.startswith(TASK_NAME_PREFIX) or not suffix.isdigit():
        return unknown
    conn_id = int(suffix)
    for slot in scoreboard.busy():
        if slot.conn_id == conn_id:
            return (slot.method, slot.path, slot.client)
    return unknown


class LoopWatch:
    """The heartbeat on the loop and the watchdog thread that reads it.

    `start()` and `stop()` are called on the loop's thread, while it runs;
    stop it before the loop stops, or the watchdog would take the end of the
    loop for a stall.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        channel: socket.socket,
        scoreboard: Scoreboard | None = None,
        send: Callable[[socket.socket, ch.ToMaster], bool] = send_nowait,
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.channel = channel
        self.scoreboard = scoreboard
        self.send = send
        self.heartbeat = Heartbeat(loop, threshold)
        self.state = WatchState()
        self.stopped = threading.Event()
        self.loop_thread = 0
        self.thread: threading.Thread | None = None
        self._held: ch.LoopLag | None = None
        self._told_blocked = False
        """What the master last heard (`LoopStall`)."""

    def start(self) -> None:
        self.loop_thread = threading.get_ident()
        self.heartbeat.start()
        self.thread = threading.Thread(target=self._run, name="poolwarden-loop-watch", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.heartbeat.stop()

    def _run(self) -> None:
        interval = check_interval(self.threshold)
        try:
            while not self.stopped.wait(interval):
                self.check(time.monotonic())
        except Exception:
            # A fault of poolwarden's, not the app's: no ThreadFailed event,
            # and the loop goes unwatched rather than the worker down.
            sys.stderr.write(f"the event loop watchdog stopped:\n{traceback.format_exc()}")

    def check(self, now: float) -> None:
        """One look at the heartbeat, and what follows from it."""
        due = self.heartbeat.due
        previous = self.state
        self.state, step = observe(previous, now, due, self.threshold)
        self._tell_stall(self.state.stall_due is not None)
        if step is Step.CAPTURE:
            frames = stack_of(self.loop_thread)
            method, path, client = request_of(self.loop, self.scoreboard)
            self._held = ch.LoopLag(
                lag=round(now - due, 3),
                blocked=round(now - due, 3),
                ended=False,
                thread=self.loop_thread,
                frames=frames,
                skipped=previous.skipped,
                method=method,
                path=path,
                client=client,
            )
        elif step is Step.REPORT_ENDED and self._held is not None:
            late_due, late = self.heartbeat.last_late
            stall_due = previous.stall_due
            blocked = late if late_due == stall_due else now - (stall_due or now)
            self._report(blocked, ended=True)
        elif step is Step.REPORT_BLOCKED and self._held is not None:
            self._report(now - (previous.stall_due or now), ended=False)

    def _tell_stall(self, blocked: bool) -> None:
        """Tell the master when the loop stalls and when it runs again, so it
        sends a blocked worker no new connection. A message the full channel
        drops is sent again at the next look."""
        if (
            blocked != self._told_blocked
            and not self.stopped.is_set()
            and self.send(self.channel, ch.LoopStall(blocked))
        ):
            self._told_blocked = blocked

    def _report(self, blocked: float, *, ended: bool) -> None:
        held, self._held = self._held, None
        if held is None or self.stopped.is_set():
            return
        message = msgspec.structs.replace(
            held, blocked=round(max(blocked, held.lag), 3), ended=ended
        )
        self.send(self.channel, message)
