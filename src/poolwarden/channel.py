"""The channel between the master and one worker: messages and fd passing.

```
 master ──Boot, Dispatch(+fd), Ping, Drain──────────▶ worker
 master ◀──Ready | StartupFailed, Pong, Closed──────── worker
 master ◀──LoopLag, LoopStall (its loop watchdog, ASGI)─ worker
 master ◀──RecycleRequest (its request limit, SIGTERM)─ worker
 master ◀──HandBack(+fd) (another pool's, or draining)─ worker
```

The channel is one `AF_UNIX`/`SOCK_SEQPACKET` socket pair per worker, so each
message arrives whole and in order, and a connection's fd rides along with
its `Dispatch` as `SCM_RIGHTS` ancillary data. Messages are msgpack-encoded
msgspec structs, one tagged struct per kind. The master never waits for a
reply to a `Dispatch`: it sends and moves on, and learns later from `Closed`
that it may drop its own copy of the connection.
"""

from __future__ import annotations

import array
import os
import socket

import msgspec

# A Dispatch carries the bytes the front end read: at most the head limit plus
# one read's worth of body. Everything else is small.
MAX_MESSAGE = 1 << 17


class Frame(msgspec.Struct, frozen=True):
    """One frame of a traceback, as the worker saw it."""

    filename: str
    lineno: int
    name: str
    line: str = ""


class StartupFailure(msgspec.Struct, frozen=True):
    """Why a worker could not start its app; errors are data.

    `phase` is where it failed (`import`, `attribute`, `factory`, `interface`,
    `lifespan`); `module` is the innermost module of the app's own code in the
    traceback, which is where an operator should look first.
    """

    phase: str
    app: str
    exception_type: str
    message: str
    module: str | None = None
    lineno: int | None = None
    frames: list[Frame] = []
    traceback: str = ""

    def headline(self) -> str:
        """One sentence naming the cause, for a terminal or a log line."""
        where = ""
        if self.module:
            where = f" in {self.module}" + (f", line {self.lineno}" if self.lineno else "")
        return (
            f"cannot start app {self.app!r} ({self.phase} failed{where}): "
            f"{self.exception_type}: {self.message}"
        )


# master → worker


class WebSocketOptions(msgspec.Struct, frozen=True, array_like=True):
    """How an ASGI worker serves WebSockets: the pool's `ws_*` settings and
    `max_websockets` (`PoolSettings` says why each default)."""

    max_size: int = 16 * 1024 * 1024
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    per_message_deflate: bool = True
    max_websockets: int = 0


class Boot(msgspec.Struct, tag="boot", frozen=True, array_like=True):
    """Everything a worker needs to start; the first message it receives."""

    pool: str
    app: str
    factory: bool
    interface: str
    threads: int
    crash_file: str
    access_log: bool
    access_log_format: str
    keepalive_timeout: float
    head_limits: dict[str, float]
    scoreboard_slots: int
    multiprocess: bool
    graceful_timeout: float
    routes: list[dict[str, object]] | None = None
    """The routing table (`RoutingTable.to_data`), when requests on one
    connection may belong to other pools; None when they cannot."""
    core_dumps: bool = False
    """Raise the soft core size limit to the hard one (the pool's `core_dumps`)."""
    debug_dir: str = ""
    """Where debug sockets go (`STATE_DIR/debug`): `debug attach` and start-up debugging."""
    debug: str = ""
    """"pdb" or "debugpy": open a debug server and wait for a client before
    loading the app (`poolwarden debug startup`); "" for a normal start."""
    loop_lag_warning: float = 1.0
    """Seconds an ASGI worker's loop may be blocked before its watchdog
    reports the stall (`LoopLag`); 0: no watchdog."""
    request_limit: int = 0
    """Requests after which the worker asks for its recycle (`RecycleRequest`):
    the pool's `recycling.requests` less this worker's jitter; 0: no limit."""
    websocket: WebSocketOptions = WebSocketOptions()
    """WebSocket limits and keep-alive pings (ASGI workers)."""


class Dispatch(msgspec.Struct, tag="dispatch", frozen=True, array_like=True):
    """A client connection handed to the worker; its fd rides along."""

    conn_id: int
    peer_host: str
    peer_port: int
    server_host: str
    server_port: int
    scheme: str
    script_name: str
    buffered: bytes
    site: str = ""
    """The site the request was routed to, for logs."""
    binding: str = ""
    """The listener it arrived on (as configured), for routing later requests."""


class Ping(msgspec.Struct, tag="ping", frozen=True, array_like=True):
    """Answered by the worker's loop itself, so a blocked loop shows."""

    seq: int


class Drain(msgspec.Struct, tag="drain", frozen=True, array_like=True):
    """Finish the requests in flight, take no new ones, then exit 0."""


class Abandon(msgspec.Struct, tag="abandon", frozen=True, array_like=True):
    """The master answered this connection itself (a request past its time
    limit got 504) and shut it for writing: whatever the app still does, the
    worker closes the connection when it is done, and writes nothing more."""

    conn_id: int


class DumpTasks(msgspec.Struct, tag="dump_tasks", frozen=True, array_like=True):
    """Describe every pending asyncio task; answered by the loop, so a
    blocked loop gives no answer (its thread's stack then tells why)."""

    seq: int


class Routes(msgspec.Struct, tag="routes", frozen=True, array_like=True):
    """A reload changed the routing table."""

    routes: list[dict[str, object]] | None


# worker → master


class Ready(msgspec.Struct, tag="ready", frozen=True, array_like=True):
    """The app loaded (and its lifespan start-up passed); send connections."""

    pid: int
    interface: str


class StartupFailed(msgspec.Struct, tag="startup_failed", frozen=True, array_like=True):
    """The app could not start; the worker exits right after sending this."""

    failure: StartupFailure


class Pong(msgspec.Struct, tag="pong", frozen=True, array_like=True):
    seq: int


class Closed(msgspec.Struct, tag="closed", frozen=True, array_like=True):
    """The worker closed these connections; the master may drop its copies."""

    conn_ids: list[int]


class HandBack(msgspec.Struct, tag="hand_back", frozen=True, array_like=True):
    """The connection (its fd rides along) goes back to the front end with
    the bytes of its next request: one that belongs to another pool, or, from
    a draining worker, none yet (`buffered` empty: an idle keep-alive
    connection, nothing read of it), so no client sees the worker go."""

    conn_id: int
    peer_host: str
    peer_port: int
    binding: str
    buffered: bytes


class RecycleRequest(msgspec.Struct, tag="recycle_request", frozen=True, array_like=True):
    """The worker asks to be replaced: it served its `request_limit`
    ("requests"; it serves on until its replacement is Ready), or it got
    SIGTERM from outside ("SIGTERM"; the master answers with `Drain`, after
    which nothing more is dispatched to it)."""

    reason: str
    served: int


class RuntimeFailure(msgspec.Struct, tag="runtime_failure", frozen=True, array_like=True):
    """An exception escaped into poolwarden's worker runtime; the worker
    exits right after sending this."""

    exception_type: str
    message: str
    traceback: str


class ThreadFailed(msgspec.Struct, tag="thread_failed", frozen=True, array_like=True):
    """An exception ended a thread the app started (`threading.excepthook`);
    the worker lives on."""

    thread: str
    exception_type: str
    message: str
    traceback: str


class LoopLag(msgspec.Struct, tag="loop_lag", frozen=True, array_like=True):
    """The worker's event loop was blocked past `loop_lag_warning`. Sent by
    its watchdog thread, once per stall: when the loop runs again, or while
    it is still blocked after `loop_watch.HOLD_LIMIT` (`ended` false)."""

    lag: float
    """Seconds the loop had been blocked when its stack was taken."""
    blocked: float
    """Seconds it was blocked in all (so far, when not `ended`); at most one
    heartbeat (`loop_watch.BEAT_INTERVAL`) of the stall's start goes unseen."""
    ended: bool
    thread: int
    """The loop thread's id, as `poolwarden stack` shows it."""
    frames: list[Frame]
    """The loop thread's stack when taken, innermost first."""
    skipped: int = 0
    """Stalls since the previous report that were not reported (rate limit)."""
    method: str = ""
    """The request the loop was running, when it could tell (else empty)."""
    path: str = ""
    client: str = ""


class LoopStall(msgspec.Struct, tag="loop_stall", frozen=True, array_like=True):
    """The worker's event loop is blocked past `loop_lag_warning` (`blocked`),
    or runs again (not `blocked`). Sent by its watchdog thread as the state
    changes, every stall (the `LoopLag` report is rate-limited): the master
    hands a blocked worker no new connection until it runs again."""

    blocked: bool


ToWorker = Boot | Dispatch | Ping | Drain | Routes | Abandon | DumpTasks


class DebugWaiting(msgspec.Struct, tag="debug_waiting", frozen=True, array_like=True):
    """The worker opened a debug server and waits for a client there."""

    adapter: str
    address: str
    """The Unix socket's path (pdb) or 127.0.0.1:PORT (debugpy)."""


class TaskInfo(msgspec.Struct, frozen=True, array_like=True):
    """One pending asyncio task and where it is suspended."""

    name: str
    conn_id: int
    """The connection whose request it runs; 0 for the app's own tasks."""
    frames: list[Frame]
    """The chain of awaits, innermost first."""


class Tasks(msgspec.Struct, tag="tasks", frozen=True, array_like=True):
    seq: int
    tasks: list[TaskInfo]
    truncated: int = 0
    """Tasks left out to keep the message within the channel's size."""


ToMaster = (
    Ready
    | StartupFailed
    | Pong
    | Closed
    | HandBack
    | RecycleRequest
    | RuntimeFailure
    | ThreadFailed
    | Tasks
    | DebugWaiting
    | LoopLag
    | LoopStall
)

_encoder = msgspec.msgpack.Encoder()
_to_worker = msgspec.msgpack.Decoder(ToWorker)
_to_master = msgspec.msgpack.Decoder(ToMaster)


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A (master end, worker end) pair of SEQPACKET sockets."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(message: ToWorker | ToMaster) -> bytes:
    return _encoder.encode(message)


def decode_to_worker(payload: bytes) -> ToWorker:
    return _to_worker.decode(payload)


def decode_to_master(payload: bytes) -> ToMaster:
    return _to_master.decode(payload)


class ChannelClosed(Exception):
    """The other end of the channel is gone (EOF)."""


_FD_ANCILLARY = socket.CMSG_LEN(array.array("i").itemsize)


def receive(sock: socket.socket, flags: int = 0) -> tuple[bytes, int | None]:
    """One message and the fd that came with it, if any.

    `socket.recv_fds` ignores its `flags` on Python 3.11, so this calls
    `recvmsg` itself; `MSG_DONTWAIT` must reach the kernel.
    """
    payload, ancillary, _flags, _address = sock.recvmsg(MAX_MESSAGE, _FD_ANCILLARY, flags)
    fd = None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for extra in fds[1:]:
                os.close(extra)
            fd = fds[0] if fds else None
    return payload, fd
