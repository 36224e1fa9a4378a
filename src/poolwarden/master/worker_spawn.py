"""Starting one worker process (its command line, what it inherits, its output), and reaping it.

```
 WorkerProcess.spawn ──spawn_worker()──▶ Popen: [LAUNCH WRAPPER...] python -m poolwarden.worker
                                                 CHANNEL SCOREBOARD LOG MASTER CRASH STACKS
        ◀── Spawned: the process, the master's end of the channel (Boot sent),
            the scoreboard, the stack pipe, the crash file, the output readers
 stdout/stderr pipes ──▶ OutputReader ──▶ master's stderr, prefixed; the tails kept
 WorkerProcess.kill ──▶ Spawned.kill: SIGKILL (its process group, under a launch wrapper)
 pidfd readable ──▶ WorkerProcess ──▶ Spawned.reap: the wait status
```

The worker finds each inherited descriptor by its number on the command
line (`bootstrap.main` reads them in this order). The master opens the
crash file and the worker inherits it: a worker running as another user
need not reach into the state directory. The file is named by the pid
once the process exists, and `Boot` tells the worker that name. A spawn
that fails leaves nothing open behind it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from poolwarden import channel as ch
from poolwarden.master.output import OutputReader
from poolwarden.master.stack_capture import StackPipe
from poolwarden.scoreboard import Scoreboard

if TYPE_CHECKING:
    from poolwarden.settings import PoolSettings


@dataclass(slots=True)
class Spawned:
    """A started worker: its process and what the master holds of it."""

    process: subprocess.Popen[bytes]
    """The process the master started and reaps: the launch wrapper's, if any."""
    channel: socket.socket
    """The master's end of the channel: `Boot` sent, non-blocking."""
    scoreboard: Scoreboard
    stack_pipe: StackPipe
    crash_file: str
    """Where faulthandler writes when the worker crashes or is aborted."""
    output: list[OutputReader]
    launch_wrapper: bool
    _pidfd: int = field(default=-1, init=False)

    def watch_exit(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
        """Call `on_exit` when the process ends: its pidfd turns readable."""
        self._pidfd = os.pidfd_open(self.process.pid)
        loop.add_reader(self._pidfd, on_exit)

    def reap(self, loop: asyncio.AbstractEventLoop) -> int:
        """The ended process's wait status; it is gone from the process table."""
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        _, status = os.waitpid(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        return status

    def kill(self) -> None:
        """SIGKILL, unless it is gone already. A launch wrapper leads the
        worker's process group (process_group=0): its program goes too."""
        try:
            if self.launch_wrapper:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                os.kill(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def read_output_to_end(self) -> None:
        """The process is gone: pass on what its pipes still hold, then close them."""
        for reader in self.output:
            reader.read_available()
            reader.close()


def scoreboard_slots(settings: PoolSettings) -> int:
    """A WSGI worker needs a slot per thread; an ASGI worker (or one whose
    interface is not known before it loads the app) records up to
    `scoreboard_slots` requests of its one loop, and never gets fewer
    slots than `threads` in case the app turns out to be WSGI, nor fewer
    than `max_concurrency`: the master counts its requests in use there."""
    slots = settings.threads if settings.interface == "wsgi" else settings.scoreboard_slots
    return max(slots, settings.threads, settings.max_concurrency)


def spawn_worker(
    loop: asyncio.AbstractEventLoop,
    settings: PoolSettings,
    boot: ch.Boot,
    *,
    state_dir: str,
    access_log_fd: int,
    unique: int,
    tail: deque[str],
    stdout_tail: deque[str],
    stderr_tail: deque[str],
) -> Spawned:
    """Start a worker of the pool `settings` describes and send it `boot`.

    `unique` tells this spawn's crash file from another's until the pid
    names it; the worker's output lines go to `tail` (both streams) and to
    the tail of their own stream. An OSError means no process was started.
    """
    scoreboard = Scoreboard.create(scoreboard_slots(settings), f"poolwarden-{settings.name}")
    master_end, worker_end = ch.channel_pair()
    crash_dir = os.path.join(state_dir, "crash")
    spawning = os.path.join(crash_dir, f"{settings.name}-starting-{unique}.txt")
    crash_fd = os.open(spawning, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    env = dict(os.environ)
    env.update(settings.env)
    env["PYTHONUNBUFFERED"] = "1"
    stack_pipe = StackPipe(loop)
    wrapper = list(settings.launch_wrapper)
    command = [
        *wrapper,
        settings.python,
        "-m",
        "poolwarden.worker",
        str(worker_end.fileno()),
        str(scoreboard.fd),
        str(access_log_fd),
        # Under a wrapper the worker's parent may not be the master (0: see
        # bootstrap.die_with_parent).
        str(0 if wrapper else os.getpid()),
        str(crash_fd),
        str(stack_pipe.write_fd),
    ]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(
                worker_end.fileno(),
                scoreboard.fd,
                access_log_fd,
                crash_fd,
                stack_pipe.write_fd,
            ),
            cwd=settings.working_dir,
            env=env,
            process_group=0,
            user=settings.user,
            group=settings.group,
        )
    except BaseException:
        # No process: nothing else would ever close these.
        master_end.close()
        scoreboard.close()
        stack_pipe.close()
        os.unlink(spawning)
        raise
    finally:
        worker_end.close()
        os.close(crash_fd)
        stack_pipe.close_write_end()
    crash_file = os.path.join(crash_dir, f"{settings.name}-{process.pid}.txt")
    os.replace(spawning, crash_file)
    master_end.send(ch.encode(msgspec.structs.replace(boot, crash_file=crash_file)))
    master_end.setblocking(False)
    prefix = f"[{settings.name} {process.pid}] "
    assert process.stdout is not None and process.stderr is not None
    output = []
    for pipe, own_tail in ((process.stdout, stdout_tail), (process.stderr, stderr_tail)):
        fd = os.dup(pipe.fileno())
        pipe.close()
        output.append(OutputReader(loop, fd, prefix, tail, own_tail))
    return Spawned(process, master_end, scoreboard, stack_pipe, crash_file, output, bool(wrapper))
