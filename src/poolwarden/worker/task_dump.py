"""Where each pending asyncio task of a worker is suspended.

`Task.get_stack()` gives one frame for a suspended coroutine: the outermost,
usually the server's own request runner. What a reader needs is the other
end, the `await` the task sits in, so this follows the chain of awaited
coroutines (`cr_await`) down to the innermost one that has a frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

from poolwarden import channel as ch

TASK_NAME_PREFIX = "poolwarden-conn-"
"""Request tasks are named by their connection, so the master can tell which
task serves which request."""
MAX_TASKS = 200
MAX_FRAMES = 30


def request_task_name(conn_id: int) -> str:
    return f"{TASK_NAME_PREFIX}{conn_id}"


def await_chain(coro: Any) -> list[ch.Frame]:
    """The frames of a coroutine and of everything it awaits, innermost first."""
    frames: list[ch.Frame] = []
    seen = 0
    while coro is not None and seen < MAX_FRAMES:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(ch.Frame(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        seen += 1
    frames.reverse()
    return frames


def describe_tasks(seq: int, loop: asyncio.AbstractEventLoop) -> ch.Tasks:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    described = []
    for task in tasks[:MAX_TASKS]:
        name = task.get_name()
        conn_id = 0
        if name.startswith(TASK_NAME_PREFIX):
            conn_id = int(name[len(TASK_NAME_PREFIX) :])
        described.append(ch.TaskInfo(name, conn_id, await_chain(task.get_coro())))
    answer = ch.Tasks(seq, described, truncated=max(0, len(tasks) - len(described)))
    while len(ch.encode(answer)) > ch.MAX_MESSAGE - 1024 and described:
        described = described[: len(described) // 2]
        answer = ch.Tasks(seq, described, truncated=len(tasks) - len(described))
    return answer
