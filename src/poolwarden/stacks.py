"""Every thread's stack in a worker, from a `faulthandler` dump.

faulthandler writes its dump from a C signal handler without taking the
GIL, so it works on a worker whose threads are stuck in C code, where
nothing written in Python could run. Its text is all the master gets; this
module turns it into threads and frames, matches each thread to the request
it serves (the scoreboard records each slot's thread id, the same number the
dump prints) and renders the result for people and for `--json`.
"""

from __future__ import annotations

import linecache
import re

import msgspec

from poolwarden.importer import is_app_frame

_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-fA-F]+) \(most recent call first\):")
_FRAME = re.compile(r'^  File "(.*)", line (\d+|\?\?\?) in (.*)$')


class StackFrame(msgspec.Struct, frozen=True):
    filename: str
    lineno: int
    name: str
    line: str = ""
    """The source line, when the file is readable."""


class RequestInfo(msgspec.Struct, frozen=True):
    """The request a thread is serving, from the scoreboard."""

    method: str
    path: str
    client: str
    elapsed: float
    response_started: bool


class ThreadStack(msgspec.Struct, frozen=True):
    ident: int
    current: bool
    """The thread interrupted to write the dump (faulthandler's "Current
    thread"): the signal's, or the main thread when it came via remote_exec."""
    frames: list[StackFrame]
    """Most recent call first, as Python's tracebacks print them last."""
    request: RequestInfo | None = None
    name: str = ""


def parse_faulthandler(text: str) -> list[ThreadStack]:
    """The threads of one dump, in the order faulthandler printed them."""
    threads: list[ThreadStack] = []
    ident: int | None = None
    current = False
    frames: list[StackFrame] = []
    for raw in text.splitlines():
        header = _THREAD.match(raw)
        if header:
            if ident is not None:
                threads.append(ThreadStack(ident, current, frames))
            ident = int(header.group(2), 16)
            current = header.group(1) == "Current thread"
            frames = []
            continue
        frame = _FRAME.match(raw)
        if frame and ident is not None:
            lineno = frame.group(2)
            frames.append(
                StackFrame(frame.group(1), int(lineno) if lineno.isdigit() else 0, frame.group(3))
            )
    if ident is not None:
        threads.append(ThreadStack(ident, current, frames))
    return threads


def with_source(frames: list[StackFrame]) -> list[StackFrame]:
    """The frames with each one's source line, read from its file."""
    return [
        msgspec.structs.replace(frame, line=linecache.getline(frame.filename, frame.lineno).strip())
        for frame in frames
    ]


_MACHINERY = ("/poolwarden/", "/asyncio/", "threading.py", "<frozen ")


def innermost_app_frame(frames: list[StackFrame]) -> StackFrame | None:
    """The most recent frame outside poolwarden, asyncio and threading:
    usually the line to look at."""
    for frame in frames:
        if not any(part in frame.filename for part in _MACHINERY):
            return frame
    return frames[0] if frames else None


class TaskStack(msgspec.Struct, frozen=True):
    """A pending asyncio task of an ASGI worker."""

    name: str
    frames: list[StackFrame]
    """Innermost (where it is suspended) first."""
    request: RequestInfo | None = None


def render_tasks(tasks: list[TaskStack]) -> str:
    blocks = []
    for task in tasks:
        title = f"Task {task.name!r}"
        if task.request is not None:
            request = task.request
            title += (
                f" serving {request.method} {request.path} from {request.client}"
                f" for {request.elapsed:.1f}s"
            )
        lines = [title + " (suspended at the last line):"]
        for frame in reversed(task.frames):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def render_threads(threads: list[ThreadStack]) -> str:
    """Python's own traceback layout, oldest call first, one block a thread.

    The threads serving requests come first, longest-running first: they
    are what a stack is asked for. The rest keep the dump's order, and idle
    threads with the very same stack (a server's waiting thread pool) share
    one block that names each of them, so eight waiting threads do not bury
    the one that is stuck.
    """
    serving = sorted(
        (thread for thread in threads if thread.request is not None),
        key=lambda thread: -thread.request.elapsed if thread.request else 0.0,
    )
    blocks = [_thread_block([thread]) for thread in serving]
    alike: dict[tuple[str, tuple[StackFrame, ...]], list[ThreadStack]] = {}
    for thread in threads:
        if thread.request is None:
            alike.setdefault((thread.name, tuple(thread.frames)), []).append(thread)
    # Then the threads in the app's own code (an event loop blocked by it,
    # a thread the app started), before poolwarden's and the library's.
    groups = sorted(alike.values(), key=lambda group: not _in_app_code(group[0]))
    blocks.extend(_thread_block(group) for group in groups)
    return "\n\n".join(blocks) + "\n"


def _in_app_code(thread: ThreadStack) -> bool:
    return any(is_app_frame(frame.filename) for frame in thread.frames)


def _thread_block(group: list[ThreadStack]) -> str:
    """One stack and the thread(s) it belongs to."""
    first = group[0]
    if len(group) == 1:
        title = f"Thread 0x{first.ident:x}"
    else:
        idents = ", ".join(f"0x{thread.ident:x}" for thread in group)
        title = f"Threads {idents} ({len(group)} with the same stack)"
    if first.name:
        title += f" ({first.name})"
    if first.request is not None:
        request = first.request
        title += (
            f" serving {request.method} {request.path} from {request.client}"
            f" for {request.elapsed:.1f}s"
        )
    elif not first.frames:
        title += " (no Python frame)"
    lines = [title + ":"]
    for frame in reversed(first.frames):
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line}")
    return "\n".join(lines)


TASKS_BLOCKED_NOTE = (
    "the event loop did not answer within 1 s: it is blocked, and the thread stacks show by what"
)
"""Why an ASGI worker's report has no tasks (`task_stacks()` returned None)."""


def render_worker(
    threads: list[ThreadStack], tasks: list[TaskStack] | None, tasks_note: str | None
) -> str:
    """One worker's report for people: its threads, then (ASGI) its pending
    tasks or why there are none. `tasks` None and no note: a WSGI worker."""
    if threads:
        text = render_threads(threads)
    else:
        text = "No thread stacks: the worker did not answer the stack signal within 2 s.\n"
    if tasks:
        count = f"{len(tasks)} pending task{'' if len(tasks) == 1 else 's'}"
        text += f"\n{count} of the event loop:\n\n" + render_tasks(tasks)
    elif tasks is not None:
        text += "\nNo pending task on the event loop.\n"
    elif tasks_note:
        text += f"\nNo tasks: {tasks_note}.\n"
    return text
