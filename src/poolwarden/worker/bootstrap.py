"""A worker's start: tie its life to the master, enable crash dumps, load the app.

The order matters. The parent-death signal comes first, so a worker never
outlives its master. `faulthandler` is enabled before the app is imported,
so a native crash during import still leaves every thread's stack in the
crash file. The app is loaded last, and its failure is reported as data
(`StartupFailed`) before the worker exits with `EXIT_STARTUP_FAILED`.

`dump_stacks` and `attach_debugger` are what the master's `sys.remote_exec`
scripts call (PEP 768, Python 3.14+; `master/remote_exec.py`): the same
stack dump and debugger attach the signals in `signals.py` ask for, reached
without signal handling.
"""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from poolwarden import channel as ch
from poolwarden.importer import AppLoadError, detect_interface, load_app
from poolwarden.scoreboard import Scoreboard
from poolwarden.signals import STACK_SIGNAL
from poolwarden.worker.accesslog import AccessLog

EXIT_STARTUP_FAILED = 3
"""The worker's exit status after reporting a start-up failure (gunicorn's
WORKER_BOOT_ERROR is 3 too)."""

_PR_SET_PDEATHSIG = 1

stack_fd: int | None = None
"""The write end of the stack pipe (argv[6]), once `main` has it: where
`faulthandler` writes on STACK_SIGNAL and `dump_stacks` on a remote request."""

_attach: Callable[[FrameType | None], None] | None = None
"""What ATTACH_SIGNAL's handler does, once installed; `attach_debugger` calls it."""


def die_with_parent(master_pid: int) -> None:
    """Have the kernel kill this process when its parent dies.

    The parent is the master, and `master_pid` checks that it still is (the
    master may have died before `prctl` took effect). Under a launch wrapper
    (`gdb --args`, `strace -f`, `py-spy record --`) the parent may be the
    wrapper instead, and the master passes 0: the check is skipped, since a
    parent other than the master proves nothing. The signal then follows the
    wrapper (a debugger killed takes its worker along), and a dead master is
    still noticed: its end of the channel closes, a worker whose channel
    reaches EOF (before Boot or while serving) exits, and the wrapper ends
    with its program. A wrapper that `exec`s the worker (`env`, `nice`,
    `taskset`, a shell script ending in `exec "$@"`) leaves the master as
    the parent, so the signal ties the two directly, as without a wrapper.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if master_pid and os.getppid() != master_pid:
        # The master died before prctl took effect.
        os._exit(1)


def allow_core_dumps() -> None:
    """Raise the soft core size limit to the hard one (`core_dumps = true`):
    set here rather than by the master's `preexec_fn`, which is unsafe in a
    process with threads. Where the core goes is the kernel's core_pattern."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def receive_boot(channel: socket.socket) -> ch.Boot:
    payload = channel.recv(ch.MAX_MESSAGE)
    if not payload:
        raise SystemExit(1)
    message = ch.decode_to_worker(payload)
    if not isinstance(message, ch.Boot):
        raise SystemExit(f"expected Boot as the first message, got {type(message).__name__}")
    return message


def main(argv: list[str]) -> int:
    global stack_fd
    channel_fd, scoreboard_fd, access_log_fd, master_pid, crash_fd, stack_pipe = (
        int(arg) for arg in argv[:6]
    )
    die_with_parent(master_pid)
    # The master drains workers itself; a terminal's Ctrl-C is for the master.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=channel_fd)
    boot = receive_boot(channel)
    if boot.core_dumps:
        allow_core_dumps()
    # The master opened the crash file (`boot.crash_file`); it stays open
    # for the process's life, so a crash at any moment can be written.
    faulthandler.enable(file=crash_fd, all_threads=True)
    # `poolwarden stack` and request time-outs: the same C-level dump, on a
    # signal, into a pipe the master reads; the worker runs on. `dump_stacks`
    # writes there too, when the master asks through sys.remote_exec.
    faulthandler.register(STACK_SIGNAL, file=stack_pipe, all_threads=True, chain=False)
    stack_fd = stack_pipe
    sys.path.insert(0, os.getcwd())
    scoreboard = Scoreboard.attach(scoreboard_fd)
    access_log = AccessLog(access_log_fd, boot.access_log_format) if boot.access_log else None

    threading.excepthook = _report_thread_failures(channel)
    if boot.debug_dir:
        _allow_attach(boot, channel)
    try:
        if boot.debug:
            app = _load_under_debugger(boot, channel)
        else:
            app = load_app(boot.app, factory=boot.factory)
        interface = boot.interface
        if interface == "auto":
            interface = detect_interface(app)
    except AppLoadError as error:
        channel.send(ch.encode(ch.StartupFailed(error.failure)))
        return EXIT_STARTUP_FAILED

    try:
        if interface == "asgi":
            return run_asgi(app, boot, channel, scoreboard, access_log)
        from poolwarden.worker.wsgi import WSGIServer

        channel.send(ch.encode(ch.Ready(pid=os.getpid(), interface="wsgi")))
        WSGIServer(app, boot, channel, scoreboard, access_log).serve()
    except Exception as error:
        # A bug in the runtime, not in a request: say what it was, then die
        # with the traceback on stderr as well.
        _send_quietly(
            channel,
            ch.RuntimeFailure(
                exception_type=type(error).__qualname__,
                message=str(error),
                traceback="".join(traceback.format_exception(error)),
            ),
        )
        raise
    return 0


def _debug_socket(boot: ch.Boot) -> str:
    return os.path.join(boot.debug_dir, f"{boot.pool}-{os.getpid()}.pdb.sock")


def _allow_attach(boot: ch.Boot, channel: socket.socket) -> None:
    """`poolwarden debug attach PID`: on ATTACH_SIGNAL, a pdb server on a
    0600 Unix socket; the main thread stops there once a client connects."""
    from poolwarden.worker import debugger

    global _attach
    _attach = debugger.install_attach_handler(
        debugger.ATTACH_SIGNAL,
        lambda: _debug_socket(boot),
        on_listening=lambda path: _send_quietly(channel, ch.DebugWaiting("pdb", path)),
    )


# What the master's sys.remote_exec scripts call (master/remote_exec.py). They
# run in the main thread, between two bytecodes, holding the GIL.


def dump_stacks(token: str, not_after: float, script: str) -> None:
    """Write every thread's stack to the stack pipe, in the envelope of
    request `token` (`stack_envelope`), in one write.

    `not_after` (CLOCK_MONOTONIC, one clock for every process on the host)
    is when the master stops waiting and sends STACK_SIGNAL instead; a
    request reached later does nothing, so it cannot add a second dump to
    the pipe. The script's file is removed first: it has been read.
    """
    _remove_quietly(script)
    fd = stack_fd
    if fd is None or time.monotonic() > not_after:
        return
    from poolwarden.stack_envelope import wrap

    # faulthandler writes in many small pieces; into memory first, so the
    # pipe gets the dump whole, in one write no signal's dump can split.
    memory = os.memfd_create("poolwarden-stacks", os.MFD_CLOEXEC)
    try:
        faulthandler.dump_traceback(file=memory, all_threads=True)
        dump = os.pread(memory, os.fstat(memory).st_size, 0)
    finally:
        os.close(memory)
    data = memoryview(wrap(token, dump))
    while data:
        data = data[os.write(fd, data) :]


def attach_debugger(not_after: float, script: str) -> None:
    """Do what ATTACH_SIGNAL does: open the pdb server and stop the main
    thread at the frame the script interrupted, once a client connects.

    A request reached after `not_after` does nothing (the master has sent
    the signal by then); nor does one while a debugger is attached or
    awaited (`debugger.attach_handler`), so the signal and this never open
    two sessions.
    """
    _remove_quietly(script)
    attach = _attach
    if attach is None or time.monotonic() > not_after:
        return
    script_frame = sys._getframe(1)
    attach(script_frame.f_back or script_frame)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _load_under_debugger(boot: ch.Boot, channel: socket.socket) -> Any:
    """`poolwarden debug startup`: wait for a debugger before the app is
    imported, so its import can be stepped through (and a failure lands in
    post-mortem at the line that raised)."""
    from poolwarden.worker import debugger

    def load() -> Any:
        return load_app(boot.app, factory=boot.factory)

    if boot.debug == "debugpy":
        debugger.start_debugpy(
            0,
            on_listening=lambda port: _send_quietly(
                channel, ch.DebugWaiting("debugpy", f"127.0.0.1:{port}")
            ),
        )
        return load()
    session = debugger.startup_session(
        _debug_socket(boot),
        on_listening=lambda path: _send_quietly(channel, ch.DebugWaiting("pdb", path)),
    )
    return session.run(load, app=boot.app)


def _send_quietly(channel: socket.socket, message: ch.ToMaster) -> None:
    try:
        channel.send(ch.encode(message))
    except OSError:
        pass


def _report_thread_failures(
    channel: socket.socket,
) -> Callable[[threading.ExceptHookArgs], None]:
    """`threading.excepthook`: print as Python does, and tell the master."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        previous(args)
        if args.exc_type is SystemExit:
            return
        error = args.exc_value
        _send_quietly(
            channel,
            ch.ThreadFailed(
                thread=args.thread.name if args.thread is not None else "?",
                exception_type=args.exc_type.__qualname__,
                message=str(error) if error is not None else "",
                traceback="".join(
                    traceback.format_exception(args.exc_type, error, args.exc_traceback)
                ),
            ),
        )

    return hook


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_asgi(
    app: Any,
    boot: ch.Boot,
    channel: socket.socket,
    scoreboard: Scoreboard,
    access_log: AccessLog | None,
) -> int:
    from poolwarden.worker.asgi import ASGIServer, Lifespan
    from poolwarden.worker.loop_watch import LoopWatch

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = ASGIServer(app, boot, channel, scoreboard, access_log, loop)

    async def run() -> int:
        lifespan = Lifespan(app, boot.app, server.state)
        failure = await lifespan.startup()
        if failure is not None:
            channel.send(ch.encode(ch.StartupFailed(failure)))
            return EXIT_STARTUP_FAILED
        channel.send(ch.encode(ch.Ready(pid=os.getpid(), interface="asgi")))
        server.start()
        loop.add_signal_handler(signal.SIGTERM, server.sigterm)
        # Watched while it serves; stopped while the loop still runs, or
        # its end would look like a stall.
        watch = None
        if boot.loop_lag_warning > 0:
            watch = LoopWatch(loop, boot.loop_lag_warning, channel, scoreboard)
            watch.start()
        try:
            await server.done
            await lifespan.shutdown(boot.graceful_timeout)
        finally:
            if watch is not None:
                watch.stop()
        return 0

    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()
