"""A pdb debug server on a Unix socket, inside a worker.

IIS lets an administrator start the next w3wp.exe under a debug server
(`ntsd -server npipe`) or attach to a running one (`windbg -p PID`). This is
the same for a worker: its main thread stops in pdb, and pdb's own text
protocol travels over a Unix socket, so `poolwarden debug connect`, `socat -
UNIX-CONNECT:PATH` and `nc -U PATH` are all clients.

```
  debug client ──Unix socket, mode 0600──▶ worker process
  (prints output, sends lines)              main thread: SocketPdb prompt "(Pdb) "
        │                                   other threads: keep running
        └── Ctrl-C: kill(worker, SIGINT) ──▶ pdb breaks in where the main thread is
```

Two ways in:

- `startup_session(path)` before the app is imported (`poolwarden debug
  startup POOL`): wait for one client, then `run(load)` stops right before
  the import, so `step` lands on the first line of the app's module. If the
  import fails, the client gets the traceback and a post-mortem prompt at the
  line that raised, before the failure is reported as usual.
- `install_attach_handler(ATTACH_SIGNAL, ...)` (`poolwarden debug attach
  PID`): the signal makes a running worker open the same server and stop its
  main thread at the interrupted frame. On Python 3.14+ the master may ask
  through `sys.remote_exec` instead (PEP 768: no signal handling needed); its
  script calls the same function (`attach_handler`) via
  `bootstrap.attach_debugger`.

Nothing the client does kills the worker: `detach`, `quit` and the client
going away (EOF) all clear the breakpoints and let the program run on.
There is never a TCP address; only the socket file's owner (and root) can
connect.
"""

from __future__ import annotations

import bdb
import io
import os
import pdb
import signal
import socket
import stat
import struct
import sys
import time
import traceback
from collections.abc import Callable
from types import CodeType, FrameType, TracebackType
from typing import Any, Final, TypeVar

from poolwarden import signals
from poolwarden.importer import AppLoadError, is_app_frame
from poolwarden.unix_paths import reachable

T = TypeVar("T")

ATTACH_SIGNAL: Final = int(signals.ATTACH_SIGNAL)
"""`poolwarden debug attach` sends this. A real-time signal, so it cannot be
confused with the signals the master uses (TERM, HUP, ABRT, KILL) or with an
app's SIGUSR1/SIGUSR2 handlers. A process without the handler dies of it
(the default action), so only send it to workers that installed it."""

PROMPT: Final = "(Pdb) "
CONFIRM_CLEAR: Final = "Clear all breaks? "
"""The one question pdb asks outside its prompt (`clear` with no argument)."""

MACHINERY_MODULES: Final = ("importlib", "importlib.*", "_frozen_importlib*", "poolwarden.*")
"""Modules `step` never stops in during a startup session: the import system
and poolwarden itself, so `step` from the break-in point lands on the app's
first line, as Python's tracebacks hide importlib's frames."""


def parent_packages(app: str | None) -> frozenset[str]:
    """The packages imported before the app's own module: `a` and `a.b` for
    `a.b.wsgi:app`."""
    if not app:
        return frozenset()
    parts = app.partition(":")[0].split(".")
    return frozenset(".".join(parts[:end]) for end in range(1, len(parts)))


DEFAULT_ATTACH_TIMEOUT: Final = 60.0
"""How long an attach signal keeps the main thread waiting for a client. Long
enough to type `poolwarden debug connect`, short enough that a stray signal
does not stall a serving worker for good."""


class DebuggerTimeout(TimeoutError):
    """No debugger connected in time; the socket file is gone again.

    The caller should carry on without a debugger (and may say so).
    """

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(f"no debugger connected to {path} within {timeout:g} s")
        self.path = path
        self.timeout = timeout


# Who is debugging this process

_current: SocketPdb | None = None
"""The one attached debugger in this process; a second one is refused."""
_accepting = False
"""Whether this process is waiting for a debugger to connect."""


def session_active() -> bool:
    """Whether a debugger is attached to this process, or about to be.

    A session whose client went away while the program ran on (after
    `continue`) does not count: it is detached here, so the next attach
    works.
    """
    if _current is not None and _current.client_gone():
        _current.detach()
    return _current is not None or _accepting


# The socket


def listen(path: str) -> socket.socket:
    """Listen on a Unix socket at `path` that only this user can connect to.

    The parent directory is created with mode 0700. The socket is bound under
    a umask of 0177, so the file is 0600 from the moment it exists (a chmod
    after bind would leave a window where anyone could connect); the chmod
    afterwards only guards against a filesystem that ignores the umask. The
    umask is process-wide, so a file another thread creates during the bind
    gets the narrower mode: too strict, never too loose.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    _remove_stale_socket(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o177)
        try:
            with reachable(path) as address:
                listener.bind(address)
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        listener.listen(1)
    except BaseException:
        listener.close()
        raise
    return listener


def _remove_stale_socket(path: str) -> None:
    """Remove a socket left by an earlier session; refuse to remove anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not replacing it")
    os.unlink(path)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (Linux)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def accept_one(
    path: str,
    *,
    on_listening: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> socket.socket:
    """Listen at `path`, accept one client of this user (or root), stop listening.

    The socket file stays until the session ends (`SocketPdb.detach`); on a
    timeout it is removed and `DebuggerTimeout` raised.
    """
    global _accepting
    listener = listen(path)
    _accepting = True
    try:
        if on_listening is not None:
            on_listening(path)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            listener.settimeout(remaining)
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                raise DebuggerTimeout(path, timeout or 0.0) from None
            # The file mode already keeps others out; this also covers a
            # directory whose permissions someone loosened.
            _, uid, _ = peer_credentials(connection)
            if uid in (os.getuid(), 0):
                connection.settimeout(None)
                return connection
            connection.close()
    except BaseException:
        _unlink_quietly(path)
        raise
    finally:
        _accepting = False
        listener.close()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Connection(io.RawIOBase):
    """The client's socket as a stream that never raises into the program.

    A client may vanish at any moment; pdb must then see EOF (and detach),
    not an `OSError` that would propagate into the app. Writes to a gone
    client are dropped; reads return EOF.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    @property
    def name(self) -> str:
        return "<debug client>"

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._sock.recv_into(buffer)
        except OSError:
            return 0

    def read(self, size: int = -1, /) -> bytes:
        buffer = bytearray(size if size > 0 else 65536)
        return bytes(buffer[: self.readinto(buffer)])

    def write(self, data: Any) -> int:
        size = len(data)
        try:
            self._sock.sendall(data, socket.MSG_NOSIGNAL)
        except OSError:
            pass
        return size

    def peer_closed(self) -> bool:
        """Whether the client has gone (EOF or an error), without reading its input."""
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def hang_up(self) -> None:
        """End the connection: the client sees EOF; later reads and writes are no-ops."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


# The debugger


class SocketPdb(pdb.Pdb):
    """pdb with a connected socket as its terminal, for the main thread.

    Differences from pdb at a terminal, each so the debugger cannot hurt
    the worker it debugs:

    - `quit`, `exit`, `detach` and EOF (Ctrl-D, or the client went away) all
      *detach*: breakpoints are cleared, tracing stops, the socket closes and
      the program runs on. pdb's `quit` raises `BdbQuit` in the debugged
      program, which would kill the app or the worker; a remote debugger
      must not do that by accident.
    - SIGINT: the worker ignores it, so while a client is connected the
      session installs its own handlers: at the prompt Ctrl-C cancels the
      line (`--KeyboardInterrupt--`), while the program runs it breaks in
      at once wherever the main thread is. The original disposition comes
      back on detach.
    - `run`/`restart` (a `Restart` exception into the app) and `interact`
      (reads the process's own stdin) are not available.

    Only the main thread is debugged (pdb traces one thread); others keep
    running while it is stopped.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        path: str | None = None,
        skip: tuple[str, ...] | None = None,
    ) -> None:
        self._connection = _Connection(sock)
        super().__init__(
            stdin=io.TextIOWrapper(self._connection, encoding="utf-8", errors="replace"),
            stdout=io.TextIOWrapper(
                self._connection, encoding="utf-8", errors="replace", write_through=True
            ),
            skip=skip,
            nosigint=False,
            readrc=False,
        )
        self.use_rawinput = False
        self.prompt = PROMPT
        self.path = path
        self.attached = True
        self.break_in_frame: FrameType | None = None
        """A poolwarden frame allowed to stop despite `skip`: the break-in point."""
        self.skip_code: set[CodeType] = set()
        """Code never stepped into, such as the caller's `load` lambda."""
        self.at_app_frame = False
        """The next post-mortem starts at the app's innermost frame."""
        self.skip_packages: frozenset[str] = frozenset()
        """Packages whose import `step` passes through on its way to the app's
        module (`myproject` for `myproject.wsgi:app`); their code still stops
        at a breakpoint, and a failure in them still lands in post-mortem."""
        self._interacting = False
        self._sigint_before: Any = signal.getsignal(signal.SIGINT)
        global _current
        _current = self

    def client_gone(self) -> bool:
        """Whether the client went away; pdb itself notices only at its next prompt."""
        return self.attached and self._connection.peer_closed()

    # Detaching instead of quitting

    def detach(self) -> None:
        """Clear breakpoints, stop tracing, close the socket and remove its file.

        Idempotent; after it the program runs as if never debugged.
        """
        global _current
        if not self.attached:
            return
        self.attached = False
        self.clear_all_breaks()
        self.set_continue()
        sys.settrace(None)
        pdb.Pdb._previous_sigint_handler = None  # type: ignore[attr-defined]
        if self._sigint_before is not None:
            _set_sigint(self._sigint_before)
        self._connection.hang_up()
        if self.path is not None:
            _unlink_quietly(self.path)
        if _current is self:
            _current = None

    def do_detach(self, arg: str) -> bool:
        """detach
        Clear all breakpoints, end the debug session and let the program
        run on without the debugger. Ctrl-D (EOF) does the same.
        """
        self.message("Detached: the program continues without the debugger.")
        self.detach()
        return True

    def do_quit(self, arg: str) -> bool:
        """q(uit) | exit
        Detach, as `detach` does. (pdb's quit would raise BdbQuit in the
        debugged program and kill the app; here it never does.)
        """
        return self.do_detach(arg)

    do_q = do_quit
    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        """The client pressed Ctrl-D or went away: detach."""
        return self.do_detach(arg)

    def do_clear(self, arg: str) -> bool:
        """cl(ear) [filename:lineno | bpnumber ...]
        With space-separated breakpoint numbers, clear those; with
        filename:lineno, clear the breakpoints at that line; with no
        argument, clear all breakpoints after asking (over the socket:
        pdb asks with `input()`, which would read the worker's own stdin).
        """
        if arg:
            return bool(super().do_clear(arg))
        self.stdout.write(CONFIRM_CLEAR)
        self.stdout.flush()
        if self.stdin.readline().strip().lower() in ("y", "yes"):
            cleared = [bp for bp in bdb.Breakpoint.bpbynumber if bp]
            self.clear_all_breaks()
            for bp in cleared:
                self.message(f"Deleted {bp}")
        return False

    do_cl = do_clear

    def do_run(self, arg: str) -> bool:
        """run | restart
        Not available: it would raise into the app. Recycle the worker instead.
        """
        self.error("restarting is not available in a worker; recycle the pool instead")
        return False

    do_restart = do_run

    def do_interact(self, arg: str) -> bool:
        """interact
        Not available over the debug socket; use `!statement` instead.
        """
        self.error("interact is not available over the debug socket; use !statement instead")
        return False

    # Stopping

    def set_stepinstr(self) -> None:
        """Stop at the next line, not the next instruction.

        From Python 3.13 `set_trace` stops before the next *instruction*, which
        is still on poolwarden's line that called it; a session's first prompt
        belongs on the next *line* (the app's load), as with pdb up to 3.12.
        """
        self.set_step()

    def stop_here(self, frame: FrameType) -> bool:
        if frame is self.break_in_frame:
            # Bdb's rule without `skip`: the break-in point is poolwarden code.
            if frame is self.stopframe:
                return self.stoplineno != -1 and frame.f_lineno >= self.stoplineno
            return self.stopframe is None
        if frame.f_code in self.skip_code:
            return False
        if (
            frame.f_code.co_name == "<module>"
            and frame.f_globals.get("__name__") in self.skip_packages
        ):
            return False
        if self.skip and (_is_import_machinery(frame) or _inside_import_hook(frame)):
            return False
        return super().stop_here(frame)

    def user_call(self, frame: FrameType, argument_list: None) -> None:
        # Stepping into a module stops on its first line, not on a `--Call--`
        # event at the same line one step earlier.
        if frame.f_code.co_name == "<module>":
            return
        super().user_call(frame, argument_list)

    def setup(self, f: FrameType | None, tb: TracebackType | None) -> Any:
        """pdb's setup; a post-mortem then starts at the app's innermost
        frame rather than inside the library call that raised (`os.environ`'s
        `__getitem__` for a missing setting): `down` still goes there."""
        result = super().setup(f, tb)
        if self.at_app_frame:
            self.at_app_frame = False
            for index in range(len(self.stack) - 1, -1, -1):
                candidate = self.stack[index][0]
                if is_app_frame(candidate.f_code.co_filename):
                    self.curindex = index
                    self.curframe = candidate
                    self.curframe_locals = candidate.f_locals
                    break
        return result

    def interaction(self, frame: FrameType | None, traceback: TracebackType | None) -> None:
        if not self.attached:
            return
        _set_sigint(signal.default_int_handler)
        self._interacting = True
        try:
            super().interaction(frame, traceback)
        finally:
            self._interacting = False
        if self.attached:
            # The program runs again: a Ctrl-C from the client breaks in.
            pdb.Pdb._previous_sigint_handler = None  # type: ignore[attr-defined]
            _set_sigint(self.sigint_handler)

    def sigint_handler(self, signum: Any, frame: FrameType | None) -> None:
        """Ctrl-C while the program runs: stop now, where the main thread is.

        pdb's own handler stops at the *next* traced line, which never comes
        while the main thread sits in a skipped poolwarden frame or blocks in
        a system call; stopping at once is what `windbg` does.
        """
        if self.allow_kbdint:  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        if self._interacting or not self.attached:
            return
        self.message("\nProgram interrupted. (Use 'cont' to resume).")
        self.stop_at(frame if frame is not None else sys._getframe())

    def stop_at(self, frame: FrameType) -> None:
        """Give the client a prompt at `frame` now; trace from there afterwards.

        For signal handlers: `frame` is the interrupted frame. Tracing is off
        during the prompt (pdb's own code must not be traced) and is turned
        on afterwards when the command needs it (`step`, `next`, breakpoints).
        """
        sys.settrace(None)
        self.reset()
        outer: FrameType | None = frame
        while outer is not None:
            outer.f_trace = self.trace_dispatch
            self.botframe = outer
            outer = outer.f_back
        self.interaction(frame, None)
        running_free = self.stopframe is self.botframe and self.stoplineno == -1
        if self.attached and (self.breaks or not running_free):
            sys.settrace(self.trace_dispatch)


def _is_import_machinery(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__") or ""
    return frame.f_code.co_filename.startswith("<frozen importlib") or (
        name == "importlib" or name.startswith(("importlib.", "_frozen_importlib"))
    )


def _inside_import_hook(frame: FrameType) -> bool:
    """A function the import system called (a `sys.meta_path` finder, a loader).

    Such hooks come from site-packages (setuptools' `_distutils_hack`,
    editable installs) and are no more the app's business than importlib
    is. A module body is never a hook: that is where `step` should land.
    """
    if frame.f_code.co_name == "<module>":
        return False
    caller = frame.f_back
    while caller is not None:
        if caller.f_code.co_name == "<module>":
            return False
        if _is_import_machinery(caller):
            return True
        caller = caller.f_back
    return False


def _set_sigint(handler: Any) -> None:
    try:
        signal.signal(signal.SIGINT, handler)
    except (ValueError, TypeError):
        # Not the main thread, or a handler installed from C: leave it be.
        pass


# Start-up debugging


class StartupSession:
    """A connected client, waiting to watch the app being imported."""

    def __init__(self, debugger: SocketPdb) -> None:
        self.debugger = debugger

    def run(self, load: Callable[[], T], *, app: str | None = None) -> T:
        """Call `load()` under the debugger, stopped right before it runs.

        `step` goes into the app's module (poolwarden's and importlib's
        frames are skipped), `continue` runs the import. If `load` raises,
        the client gets the app's traceback and a post-mortem prompt at the
        line that raised; when it continues, the exception propagates
        unchanged, so the caller reports the start-up failure as usual.

        After a successful load the session detaches, unless the client set
        breakpoints: then it stays connected so they can still hit until the
        client detaches (Ctrl-C, then Ctrl-D). pdb traces only the main
        thread: it runs an ASGI app's event loop, but a WSGI app's requests
        run on the worker's thread pool, where breakpoints do not hit.
        """
        debugger = self.debugger
        debugger.message(_banner(app))
        debugger.skip_packages = parent_packages(app)
        code = getattr(load, "__code__", None)
        if isinstance(code, CodeType):
            debugger.skip_code.add(code)
        try:
            result = self._break_before(load)
        except BaseException as error:
            # Tracing off first: anything called from here on (pdb, bdb) must
            # not be stepped into.
            sys.settrace(None)
            debugger.break_in_frame = None
            if isinstance(error, Exception):
                self._post_mortem(error)
            debugger.detach()
            raise
        sys.settrace(None)
        debugger.break_in_frame = None
        if debugger.attached and debugger.breaks:
            debugger.message(
                f"\nThe app is loaded. Breakpoints are set in {len(debugger.breaks)} file(s), "
                "so the session stays open for them. Ctrl-C breaks in; `detach` ends it."
            )
            debugger.set_continue()
            _set_sigint(debugger.sigint_handler)
            sys.settrace(debugger.trace_dispatch)
        else:
            debugger.message("\nThe app is loaded; the worker continues without the debugger.")
            debugger.detach()
        return result

    def _break_before(self, load: Callable[[], T]) -> T:
        frame = sys._getframe()
        self.debugger.break_in_frame = frame
        self.debugger.set_trace(frame)
        return load()

    def _post_mortem(self, error: Exception) -> None:
        debugger = self.debugger
        if not debugger.attached:
            return
        original = _original_exception(error)
        tb = original.__traceback__ if original is not None else None
        if original is None or tb is None or not _has_app_frame(tb):
            debugger.message(f"\nThe app failed to load: {error}")
            return
        # From the app's first frame on, as the event shows it: the import
        # system's frames above it are no part of the story.
        shown: TracebackType | None = tb
        while shown is not None and not is_app_frame(shown.tb_frame.f_code.co_filename):
            shown = shown.tb_next
        report = traceback.TracebackException(type(original), original, shown or tb)
        debugger.message("\nThe app failed to load:\n" + "".join(report.format()))
        debugger.message(
            "Post-mortem at the app's line that raised (`up` and `down` walk the "
            "traceback). `continue` or `detach` lets the worker report the failure."
        )
        debugger.reset()
        debugger.at_app_frame = True
        debugger.interaction(None, tb)


def _original_exception(error: BaseException) -> BaseException | None:
    """The app's own exception: `AppLoadError` hides it as its context."""
    if isinstance(error, AppLoadError):
        return error.__cause__ or error.__context__
    return error


def _has_app_frame(tb: TracebackType | None) -> bool:
    while tb is not None:
        if is_app_frame(tb.tb_frame.f_code.co_filename):
            return True
        tb = tb.tb_next
    return False


def _banner(app: str | None) -> str:
    what = f"the app {app!r}" if app else "the app"
    return (
        f"poolwarden: worker {os.getpid()} is about to import {what}.\n"
        "  step      go into the app's module (stops at its first line)\n"
        "  continue  import it; Ctrl-C breaks in while it runs\n"
        "  detach    (or Ctrl-D) let the worker run on without the debugger"
    )


def startup_session(
    path: str,
    *,
    on_listening: Callable[[str], None] | None = None,
    accept_timeout: float | None = None,
) -> StartupSession:
    """Wait at `path` for a debugger; return the session to `run` the load in.

    `on_listening(path)` is called once the socket accepts connections (the
    worker tells the master "waiting for a debugger at PATH"). Raises
    `DebuggerTimeout` if nobody connects within `accept_timeout` seconds.
    """
    connection = accept_one(path, on_listening=on_listening, timeout=accept_timeout)
    return StartupSession(SocketPdb(connection, path=path, skip=MACHINERY_MODULES))


# Attaching to a running worker


def attach_handler(
    path_for: Callable[[], str],
    *,
    on_listening: Callable[[str], None] | None = None,
    accept_timeout: float = DEFAULT_ATTACH_TIMEOUT,
) -> Callable[[FrameType | None], None]:
    """What an attach does, given the frame to stop at; call it in the main thread.

    It opens the socket at `path_for()`, calls `on_listening(path)`, waits up
    to `accept_timeout` seconds for a client (the main thread waits; other
    threads run on) and gives it a prompt at `frame`. With no client in time
    it removes the socket and returns, and the program carries on. A request
    while a debugger is already attached, or one is awaited, is ignored: the
    attach signal and a `sys.remote_exec` request for the same attach
    (`bootstrap.attach_debugger`) may both arrive, and only the first acts.
    """

    def attach(frame: FrameType | None) -> None:
        if session_active():
            return
        path = path_for()
        try:
            connection = accept_one(path, on_listening=on_listening, timeout=accept_timeout)
        except (DebuggerTimeout, OSError) as error:
            print(f"poolwarden: debugger not attached: {error}", file=sys.stderr)
            return
        debugger = SocketPdb(connection, path=path)
        debugger.message(
            f"poolwarden: attached to process {os.getpid()}; its main thread is stopped "
            "here, other threads keep running.\n"
            "  continue  let it run (Ctrl-C breaks in again)\n"
            "  detach    (or Ctrl-D) end the session"
        )
        debugger.stop_at(frame if frame is not None else sys._getframe())

    return attach


def install_attach_handler(
    signum: int,
    path_for: Callable[[], str],
    *,
    on_listening: Callable[[str], None] | None = None,
    accept_timeout: float = DEFAULT_ATTACH_TIMEOUT,
) -> Callable[[FrameType | None], None]:
    """On `signum`, stop the main thread in pdb, served at `path_for()`.

    Call from the main thread. The handler is `attach_handler`'s, given the
    frame the signal interrupted; it is returned too, for the other way in
    (`sys.remote_exec`, which stops at the frame its script interrupted).

    This handler does real work, unlike poolwarden's others that only
    enqueue: stopping the interrupted frame is the point, and only a signal
    handler runs in it.
    """
    attach = attach_handler(path_for, on_listening=on_listening, accept_timeout=accept_timeout)

    def on_signal(received: int, frame: FrameType | None) -> None:
        attach(frame)

    signal.signal(signum, on_signal)
    return attach


# debugpy, for editors


def start_debugpy(port: int = 0, *, on_listening: Callable[[int], None] | None = None) -> int:
    """Serve debugpy (VS Code's debugger) on 127.0.0.1 and wait for the editor.

    Only loopback: debugpy's protocol runs arbitrary code, so reach a remote
    host through an SSH tunnel. Returns the port (useful with `port=0`).
    """
    try:
        import debugpy
    except ImportError:
        raise RuntimeError("debugpy is not installed: pip install debugpy") from None
    _, bound = debugpy.listen(("127.0.0.1", port))
    if on_listening is not None:
        on_listening(int(bound))
    debugpy.wait_for_client()
    return int(bound)
