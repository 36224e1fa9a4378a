"""The control API: the master's `appcmd`, HTTP/1.1 and JSON on a Unix socket.

Who talks to whom::

    poolwarden pools / wp / ...                 master process (one event loop)
    (ControlClient, blocking) ──unix socket──▶ ControlServer ──calls──▶ ControlTarget
         STATE_DIR/control.sock, mode 0600        │ SO_PEERCRED: root or     (the master:
                                                  │ the master's own uid      pools, workers,
                                                  ▼                           config)
                                   ROUTES: (method, path) → handler → JSON answer

Rules of this module:

- **Who may talk.** The socket file is created 0600 (before it accepts
  anything), and every accepted connection's peer credentials are checked:
  root and the master's own user are served, anyone else gets `403
  forbidden`. The check does not depend on the file mode, so a socket made
  world-writable by hand still serves nobody else.
- **The route table is data.** `ROUTES` lists every (method, path) the API
  answers; `docs/openapi.json` documents exactly these (a test keeps the two
  equal, and validates real answers against the documented schemas).
- **Every answer is JSON.** Errors are `{"error": {"code", "message"}}` with a
  stable `code` a script can test (`invalid_config` adds `issues`).
- **The target cannot take the server down.** An exception in a target
  method is logged and answered `500 internal_error` with its message; the
  next request is served as usual.
- **HTTP is kept small.** httptools (llhttp) parses; requests carry at most a
  small body; connections are kept alive (HTTP/1.1) until idle for
  `IDLE_TIMEOUT`; pipelined requests are answered in order.

Starting: a socket file left by a dead server is replaced (nothing answers
on it); if a live server answers, `start_control_server` raises
`ControlSocketInUse` and changes nothing. The new socket is bound under a
temporary name, restricted, listening, and then renamed over the old path in
one step, so that a client never finds a half-made socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import math
import os
import shlex
import socket
import stat
import struct
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools
import msgspec

from poolwarden import __version__
from poolwarden.config import ConfigError
from poolwarden.unix_paths import reachable

log = logging.getLogger("poolwarden.control")

SOCKET_NAME = "control.sock"
"""The control socket's file name in the state directory."""
SOCKET_MODE = 0o600
"""Read and write for the master's user only (connecting needs write permission)."""
IDLE_TIMEOUT = 60.0
"""Seconds an idle connection is kept: the CLI sends one request per
connection, so this only limits what a forgotten `curl` or `nc` holds."""
MAX_HEAD_BYTES = 16 * 1024
"""Longest request head (IIS's MaxRequestBytes is 16 KiB); our heads are a few lines."""
MAX_BODY_BYTES = 64 * 1024
"""Largest request body: no route takes one today; this bounds what is read."""
BACKLOG = 64
"""Pending connections; an operator's commands, not traffic."""


def socket_path(state_dir: str | os.PathLike[str]) -> str:
    """Where the control socket of the server using `state_dir` lives."""
    return os.path.join(os.fspath(state_dir), SOCKET_NAME)


# --- what the API talks to -------------------------------------------------------


class ControlTarget(Protocol):
    """What the control API asks of the master; the master implements it.

    Synchronous methods must be quick (they run on the master's loop);
    `pool_action` and `reload_config` may take as long as the action takes.
    """

    def server_info(self) -> dict[str, Any]:
        """pid, version, started_at (unix time), state_dir, config_path (str|None),
        bindings (list[str]), draining (bool)."""
        ...

    def health(self) -> dict[str, Any]:
        """{"status": "ok"|"degraded"|"draining", "pools": {name: state},
        "not_ready": {name: {"state", "reason", "event"}}}; degraded when any
        pool is disabled or stopped by failure (`master.health.judge`)."""
        ...

    def pools(self) -> list[dict[str, Any]]:
        """Each: name, state, reason (str|None), app, workers (int), queue (int),
        requests_served (int), last_event (str|None)."""
        ...

    def pool(self, name: str) -> dict[str, Any]:
        """One pool as in `pools()`; KeyError if unknown."""
        ...

    async def pool_action(self, name: str, action: str) -> dict[str, Any]:
        """`action` in {"start", "stop", "recycle"}; returns the pool; KeyError for
        an unknown pool; ValueError(message) if the action is not allowed now."""
        ...

    def workers(self, pool: str | None) -> list[dict[str, Any]]:
        """Each: pid, pool, state, started_at, uptime (s), requests_served,
        active_requests, connections_in_use (handed to it and not yet
        started, or in the app), capacity (int|None: no limit),
        loop_blocked, rss (bytes|None), cpu_percent (float|None)."""
        ...

    def debug_startup(
        self,
        name: str,
        adapter: str | None,
        keep: bool,
        start: bool,
        wrapper: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Arm start-up debugging of pool `name`: a debug server (`adapter`),
        a command in front of the worker (`wrapper`), or both (`start`:
        re-enable a disabled pool first); the pool's debug status. KeyError,
        ValueError (disabled, or the wrapper's program is not found)."""
        ...

    def debug_off(self, name: str) -> dict[str, Any]:
        """Disarm; the pool's debug status (`{"pool", "armed", "workers"}`)."""
        ...

    def debug_status(self) -> dict[str, Any]:
        """{"pools": [{"pool", "armed": {adapter, keep, since}|None, "workers":
        [{pid, python_pid, adapter, address, since, state}]}]}."""
        ...

    def attach(self, pid: int) -> dict[str, Any]:
        """Send the attach signal: {"pid", "pool"}; the socket shows in
        `debug_status` once the worker listens. KeyError, ValueError."""
        ...

    def reap_worker(self, pid: int) -> dict[str, Any]:
        """{"pid", "pool", "reaped": True}: SIGKILL an orphan; KeyError for an
        unknown pid, ValueError if the worker is not an orphan."""
        ...

    def requests(self, pool: str | None, min_elapsed: float) -> list[dict[str, Any]]:
        """Each: pid, pool, method, path, client, elapsed (s), phase
        ("app"|"responding"), status (int|None)."""
        ...

    async def worker_stack(self, pid: int) -> dict[str, Any]:
        """Every thread's stack of live worker `pid`, within 2 s even when the
        worker is stuck in C holding the GIL; KeyError if `pid` is not a live
        worker of this server.

        {"pid", "pool", "interface" ("wsgi"|"asgi"|None before it is ready),
        "via" ("remote_exec"|"signal": which way the dump came, see
        `stack_capture`), "threads": [{"ident" (int, as faulthandler prints
        it), "name" (str, only when known), "current" (bool: the thread
        interrupted to write the dump; the main thread via remote_exec),
        "frames": [{"filename", "lineno", "name", "line"}] most recent first,
        "request": {"method", "path", "client", "elapsed", "response_started"}
        | None (the request the thread serves: WSGI)}] (empty when the worker
        did not answer), "tasks": [{"name", "frames" (innermost first),
        "request"}] | None (ASGI only; None when the loop did not answer),
        "tasks_note": str | None (why tasks is None on an ASGI worker),
        "text": str (all of it rendered for people, oldest call first)}."""
        ...

    async def pool_stack(self, name: str) -> dict[str, Any]:
        """{"pool": name, "workers": [as `worker_stack`, one per live worker]},
        taken concurrently (2 s at most); KeyError for an unknown pool."""
        ...

    def config(self) -> dict[str, Any] | None:
        """The running config (`Config.to_dict()`), None in `poolwarden run` mode."""
        ...

    async def reload_config(self) -> dict[str, Any]:
        """{"added", "removed", "changed", "unchanged"} pool names; ConfigError when
        the file is invalid (the running config stays); ValueError without a file."""
        ...


# --- the route table -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the API: `docs/openapi.json` documents each one."""

    method: str
    path: str
    """A template: `{name}` matches one non-empty path segment."""
    operation: str
    """The OpenAPI operationId and the name of the handler."""
    summary: str
    query: tuple[str, ...] = ()
    """The query parameters it accepts; any other is a 400."""

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The path parameters if `segments` (decoded) fit the template, else None."""
        template = self.path.split("/")
        if len(template) != len(segments):
            return None
        params: dict[str, str] = {}
        for pattern, segment in zip(template, segments, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


POOL_ACTIONS = ("start", "stop", "recycle")

ROUTES: list[Route] = [
    Route("GET", "/v1/health", "health", "Readiness: 200 when every pool is well, else 503."),
    Route("GET", "/v1/server", "server", "The server: pid, version, state directory, bindings."),
    Route("GET", "/v1/pools", "list_pools", "Every application pool and its state."),
    Route("GET", "/v1/pools/{name}", "get_pool", "One application pool."),
    *(
        Route("POST", f"/v1/pools/{{name}}/{action}", f"{action}_pool", f"{action.title()} a pool.")
        for action in POOL_ACTIONS
    ),
    Route("GET", "/v1/workers", "list_workers", "Worker processes.", query=("pool",)),
    Route("POST", "/v1/workers/{pid}/reap", "reap_worker", "Reap an orphaned worker."),
    Route(
        "POST",
        "/v1/workers/{pid}/attach",
        "attach_worker",
        "Make a worker open a pdb server and stop its main thread.",
    ),
    Route(
        "POST",
        "/v1/pools/{name}/debug",
        "debug_startup",
        "Arm start-up debugging: the pool's next worker waits for a debugger.",
        query=("adapter", "keep", "start", "wrapper"),
    ),
    Route("POST", "/v1/pools/{name}/debug/off", "debug_off", "Disarm start-up debugging."),
    Route("GET", "/v1/debug", "debug_status", "What is armed, and which workers are debugged."),
    Route(
        "GET",
        "/v1/workers/{pid}/stack",
        "get_worker_stack",
        "Every thread's stack of one worker (and an ASGI worker's pending tasks).",
    ),
    Route(
        "GET",
        "/v1/pools/{name}/stack",
        "get_pool_stack",
        "Every thread's stack of each worker of a pool.",
    ),
    Route(
        "GET",
        "/v1/requests",
        "list_requests",
        "Requests in flight.",
        query=("pool", "min_elapsed"),
    ),
    Route("GET", "/v1/config", "get_config", "The running configuration."),
    Route("POST", "/v1/config/reload", "reload_config", "Read the config file again and apply it."),
]


# --- errors and answers ----------------------------------------------------------


class ControlSocketError(Exception):
    """The control socket cannot be created; the message says why and what to do."""


class ControlSocketInUse(ControlSocketError):
    """Another live server answers on the control socket: two servers must not
    share a state directory (they would share crash files and the event log)."""

    def __init__(self, path: str, pid: int | None = None) -> None:
        who = f"another poolwarden server (pid {pid})" if pid else "another poolwarden server"
        super().__init__(
            f"{who} is running in {os.path.dirname(path) or '.'}: it answers on {path}; "
            "stop it or use another state directory"
        )
        self.path = path
        self.pid = pid


@dataclass(slots=True)
class Answer:
    """A response: status, a JSON-able body, extra headers."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)


class ApiError(Exception):
    """An error answer: `{"error": {"code", "message"[, "issues"]}}` with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        issues: list[dict[str, str]] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.issues = issues
        self.headers = headers or []

    def answer(self) -> Answer:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.issues is not None:
            error["issues"] = self.issues
        return Answer(self.status, {"error": error}, list(self.headers))


def _show(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- HTTP ------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    """One parsed request."""

    method: str
    target: str
    keep_alive: bool
    body: bytes = b""


class _RequestReader:
    """httptools callbacks that collect whole requests, within the limits."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done: deque[Request] = deque()
        self.url = b""
        self.body = bytearray()
        self.head_bytes = 0
        self.in_head = False
        self.limit: ApiError | None = None

    def feed(self, data: bytes) -> None:
        """Parse `data`; completed requests go to `done`; ApiError if refused."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            assert self.limit is not None
            raise self.limit from None
        except httptools.HttpParserUpgrade:
            if self.done:  # llhttp completes the upgrade request before it stops
                self.done.pop()
            raise ApiError(400, "bad_request", "protocol upgrades are not supported") from None
        except httptools.HttpParserError as error:
            raise ApiError(400, "bad_request", f"malformed request: {error}") from None
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
            raise ApiError(431, "head_too_large", f"request head over {MAX_HEAD_BYTES} bytes")

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self.limit = ApiError(
                431, "head_too_large", f"request head over {MAX_HEAD_BYTES} bytes"
            )
            raise self.limit

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = bytearray()
        self.head_bytes = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self.in_head = False

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_BODY_BYTES:
            self.limit = ApiError(
                413, "body_too_large", f"request body over {MAX_BODY_BYTES} bytes"
            )
            raise self.limit
        self.body += body

    def on_message_complete(self) -> None:
        self.done.append(
            Request(
                method=self.parser.get_method().decode("ascii", "replace"),
                target=self.url.decode("latin-1"),
                keep_alive=self.parser.should_keep_alive(),
                body=bytes(self.body),
            )
        )


def encode_answer(answer: Answer, keep_alive: bool) -> bytes:
    """The response bytes: JSON body (and a newline, for people using curl)."""
    payload = msgspec.json.encode(answer.body) + b"\n"
    try:
        phrase = http.HTTPStatus(answer.status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {answer.status} {phrase}",
        f"Server: poolwarden/{__version__}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Cache-Control: no-store",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in answer.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _split_target(target: str) -> tuple[list[str], dict[str, list[str]]]:
    """Decoded path segments and query of a request target (origin or absolute form)."""
    parts = urllib.parse.urlsplit(target)
    path = parts.path or "/"
    if not path.startswith("/"):
        raise ApiError(400, "bad_request", f"invalid request target {_show(target)}")
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    segments = [urllib.parse.unquote(segment, errors="strict") for segment in path.split("/")]
    try:
        query = urllib.parse.parse_qs(
            parts.query, keep_blank_values=True, strict_parsing=False, errors="strict"
        )
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "query string is not UTF-8") from None
    return segments, query


def _peer_uid(sock: Any) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end, or None if unknown."""
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, uid, _gid = struct.unpack("3i", data)
    return pid, uid


# --- the server ------------------------------------------------------------------

Handler = Callable[[dict[str, str], dict[str, str]], Awaitable[Answer]]


class ControlServer:
    """The control API on one Unix socket, served on the master's loop.

    Stop it with `close()` (synchronous: it stops accepting, cancels the
    connections being served and removes the socket file if it is still
    ours), then, if the caller can wait, `await wait_closed()`.
    """

    def __init__(self, path: str, target: ControlTarget) -> None:
        self.path = path
        self.target = target
        self.allowed_uids = frozenset({0, os.getuid()})
        self._server: asyncio.AbstractServer | None = None
        self._identity: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closed = False
        self._handlers: dict[str, Handler] = {
            "health": self._health,
            "server": self._server_info,
            "list_pools": self._list_pools,
            "get_pool": self._get_pool,
            "start_pool": self._start_pool,
            "stop_pool": self._stop_pool,
            "recycle_pool": self._recycle_pool,
            "list_workers": self._list_workers,
            "reap_worker": self._reap_worker,
            "attach_worker": self._attach_worker,
            "debug_startup": self._debug_startup,
            "debug_off": self._debug_off,
            "debug_status": self._debug_status,
            "get_worker_stack": self._get_worker_stack,
            "get_pool_stack": self._get_pool_stack,
            "list_requests": self._list_requests,
            "get_config": self._get_config,
            "reload_config": self._reload_config,
        }
        missing = {route.operation for route in ROUTES} ^ set(self._handlers)
        assert not missing, f"routes and handlers differ: {sorted(missing)}"

    # starting and stopping

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        room = len(_temporary_name(self.path)) - len(os.path.basename(self.path))
        with reachable(self.path, room) as address:
            await self._check_not_in_use(address)
            sock, self._identity = self._bind(address)
        try:
            self._server = await asyncio.start_unix_server(self._accept, sock=sock)
        except BaseException:
            sock.close()
            self._remove_socket_file()
            raise
        log.info("control API on unix:%s", self.path)

    async def _check_not_in_use(self, address: str) -> None:
        """Return if `address` is free or a dead server's socket; raise if it is live."""
        try:
            mode = os.lstat(address).st_mode
        except FileNotFoundError:
            return
        except OSError as error:
            raise ControlSocketError(f"cannot use {self.path}: {error.strerror}") from None
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(
                f"{self.path} exists and is not a socket; remove it or use another state directory"
            )
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(address), 1.0)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("replacing the stale control socket %s (no server answers on it)", self.path)
            return
        except (TimeoutError, BlockingIOError):
            raise ControlSocketInUse(self.path) from None  # alive, its backlog full
        except OSError as error:
            raise ControlSocketError(f"cannot check {self.path}: {error.strerror}") from None
        try:
            pid = await asyncio.wait_for(_ask_pid(reader, writer), 1.0)
        except (OSError, TimeoutError, ValueError, KeyError, TypeError):
            pid = None
        finally:
            writer.close()
        raise ControlSocketInUse(self.path, pid)

    def _bind(self, address: str) -> tuple[socket.socket, tuple[int, int]]:
        """A listening socket at `address`, mode 0600 before it accepts anything."""
        temporary = os.path.join(os.path.dirname(address), _temporary_name(address))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            sock.bind(temporary)
            os.chmod(temporary, SOCKET_MODE)
            sock.listen(BACKLOG)
            os.rename(temporary, address)
            info = os.stat(address)
        except OSError as error:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ControlSocketError(
                f"cannot create the control socket {self.path}: {error.strerror or error}"
            ) from None
        sock.setblocking(False)
        return sock, (info.st_dev, info.st_ino)

    def _remove_socket_file(self) -> None:
        """Unlink the socket file if it is still the one we made (a newer
        server may have replaced it after we stopped answering)."""
        if self._identity is None:
            return
        with contextlib.suppress(OSError), reachable(self.path) as address:
            info = os.stat(address)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(address)
        self._identity = None

    def close(self) -> None:
        """Stop accepting, cancel open connections, remove the socket file."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        self._remove_socket_file()

    async def wait_closed(self) -> None:
        """Wait until the connections cancelled by `close()` have finished."""
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        except Exception:  # a bug here must not reach the loop's handler
            log.exception("control API: connection failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_uid(writer.get_extra_info("socket"))
        allowed = peer is not None and peer[1] in self.allowed_uids
        if not allowed:
            who = f"pid {peer[0]} uid {peer[1]}" if peer else "an unknown peer"
            log.warning("control API: refused %s (allowed: root and uid %d)", who, os.getuid())
        parser = _RequestReader()
        while not self._closed:
            data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
            if not data:
                return
            try:
                parser.feed(data)
            except ApiError as error:
                if not await self._answer_each(parser.done, writer, allowed):
                    return
                writer.write(encode_answer(error.answer(), keep_alive=False))
                await writer.drain()
                return
            if not await self._answer_each(parser.done, writer, allowed):
                return

    async def _answer_each(
        self, requests: deque[Request], writer: asyncio.StreamWriter, allowed: bool
    ) -> bool:
        """Answer the complete requests in order; False when the connection must close."""
        while requests:
            request = requests.popleft()
            if allowed:
                keep_alive = request.keep_alive
                writer.write(await self.dispatch(request))
            else:
                keep_alive = False
                forbidden = ApiError(
                    403,
                    "forbidden",
                    "the control API serves root and the server's own user "
                    f"(uid {os.getuid()}) only",
                )
                writer.write(encode_answer(forbidden.answer(), keep_alive))
            await writer.drain()
            if not keep_alive:
                return False
        return True

    async def dispatch(self, request: Request) -> bytes:
        """The response to one request: routing, the handler, errors as JSON."""
        keep_alive = request.keep_alive
        try:
            return encode_answer(await self._route(request), keep_alive)
        except ApiError as error:
            return encode_answer(error.answer(), keep_alive)
        except Exception as error:  # from the target, or an answer that cannot be encoded
            log.exception("control API: %s %s failed", request.method, request.target)
            failure = ApiError(500, "internal_error", f"{type(error).__name__}: {error}")
            return encode_answer(failure.answer(), keep_alive)

    async def _route(self, request: Request) -> Answer:
        try:
            segments, query = _split_target(request.target)
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "path is not UTF-8") from None
        allowed_methods: list[str] = []
        for route in ROUTES:
            params = route.match(segments)
            if params is None:
                continue
            if route.method != request.method:
                allowed_methods.append(route.method)
                continue
            return await self._handlers[route.operation](params, _single(query, route))
        path = "/".join(segments)
        if allowed_methods:
            allow = ", ".join(sorted(set(allowed_methods)))
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {path} (allowed: {allow})",
                headers=[("Allow", allow)],
            )
        raise ApiError(404, "not_found", f"no such route: {request.method} {path}")

    # handlers

    async def _health(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        body = self.target.health()
        return Answer(200 if body.get("status") == "ok" else 503, body)

    async def _server_info(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        return Answer(200, self.target.server_info())

    async def _list_pools(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        return Answer(200, {"pools": self.target.pools()})

    async def _get_pool(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        name = params["name"]
        try:
            return Answer(200, self.target.pool(name))
        except KeyError:
            raise _unknown_pool(name) from None

    async def _pool_action(self, name: str, action: str) -> Answer:
        try:
            return Answer(200, await self.target.pool_action(name, action))
        except KeyError:
            raise _unknown_pool(name) from None
        except ValueError as error:
            raise ApiError(409, "invalid_state", str(error)) from None

    async def _start_pool(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        return await self._pool_action(params["name"], "start")

    async def _stop_pool(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        return await self._pool_action(params["name"], "stop")

    async def _recycle_pool(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        return await self._pool_action(params["name"], "recycle")

    async def _list_workers(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        pool = _pool_parameter(query)
        try:
            return Answer(200, {"workers": self.target.workers(pool)})
        except KeyError:
            raise _unknown_pool(pool or "") from None

    async def _reap_worker(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        pid = _pid_parameter(params["pid"])
        try:
            return Answer(200, self.target.reap_worker(pid))
        except KeyError:
            raise _not_a_worker(pid) from None
        except ValueError as error:
            raise ApiError(409, "invalid_state", str(error)) from None

    async def _attach_worker(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        pid = _pid_parameter(params["pid"])
        try:
            return Answer(200, self.target.attach(pid))
        except KeyError:
            raise _not_a_worker(pid) from None
        except ValueError as error:
            raise ApiError(409, "invalid_state", str(error)) from None

    async def _debug_startup(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        name = params["name"]
        try:
            wrapper = tuple(shlex.split(query.get("wrapper", "")))
        except ValueError as error:
            raise ApiError(400, "invalid_parameter", f"wrapper: {error}") from None
        adapter: str | None = query.get("adapter", "" if wrapper else "pdb") or None
        if adapter not in (None, "pdb", "debugpy"):
            raise ApiError(
                400, "invalid_parameter", f"adapter must be pdb or debugpy, got {_show(adapter)}"
            )
        keep = query.get("keep", "0") in ("1", "true")
        start = query.get("start", "0") in ("1", "true")
        try:
            return Answer(200, self.target.debug_startup(name, adapter, keep, start, wrapper))
        except KeyError:
            raise _unknown_pool(name) from None
        except ValueError as error:
            raise ApiError(409, "invalid_state", str(error)) from None

    async def _debug_off(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        name = params["name"]
        try:
            return Answer(200, self.target.debug_off(name))
        except KeyError:
            raise _unknown_pool(name) from None

    async def _debug_status(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        return Answer(200, self.target.debug_status())

    async def _get_worker_stack(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        pid = _pid_parameter(params["pid"])
        try:
            return Answer(200, await self.target.worker_stack(pid))
        except KeyError:
            raise _not_a_worker(pid) from None

    async def _get_pool_stack(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        name = params["name"]
        try:
            return Answer(200, await self.target.pool_stack(name))
        except KeyError:
            raise _unknown_pool(name) from None

    async def _list_requests(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        pool = _pool_parameter(query)
        min_elapsed = _seconds_parameter(query, "min_elapsed")
        try:
            return Answer(200, {"requests": self.target.requests(pool, min_elapsed)})
        except KeyError:
            raise _unknown_pool(pool or "") from None

    async def _get_config(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        config = self.target.config()
        if config is None:
            raise ApiError(
                404,
                "no_config",
                "the server runs without a config file (poolwarden run): there is none to show",
            )
        return Answer(200, config)

    async def _reload_config(self, params: dict[str, str], query: dict[str, str]) -> Answer:
        try:
            return Answer(200, await self.target.reload_config())
        except ConfigError as error:
            where = f" {error.source}" if error.source else ""
            raise ApiError(
                422,
                "invalid_config",
                f"the config file{where} is invalid; the running configuration stays",
                issues=[{"path": issue.path, "message": issue.message} for issue in error.errors],
            ) from None
        except ValueError as error:
            raise ApiError(
                409, "no_config", str(error) or "the server has no config file"
            ) from None


def _temporary_name(path: str) -> str:
    """The name the socket is bound under before it is renamed to `path`."""
    return f".{os.path.basename(path)}.{os.getpid()}.tmp"


def _single(query: dict[str, list[str]], route: Route) -> dict[str, str]:
    """Query parameters as single values; unknown or repeated ones are a 400."""
    values: dict[str, str] = {}
    for name, given in query.items():
        if name not in route.query:
            takes = ", ".join(route.query) if route.query else "none"
            raise ApiError(
                400,
                "invalid_parameter",
                f"unknown query parameter {_show(name)} (this route takes: {takes})",
            )
        if len(given) > 1:
            raise ApiError(400, "invalid_parameter", f"query parameter {_show(name)} given twice")
        values[name] = given[0]
    return values


def _pool_parameter(query: dict[str, str]) -> str | None:
    pool = query.get("pool")
    if pool == "":
        raise ApiError(400, "invalid_parameter", "query parameter pool must not be empty")
    return pool


def _seconds_parameter(query: dict[str, str], name: str) -> float:
    text = query.get(name)
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ApiError(
            400,
            "invalid_parameter",
            f"query parameter {name} must be a number of seconds >= 0, got {_show(text)}",
        )
    return value


def _unknown_pool(name: str) -> ApiError:
    return ApiError(404, "unknown_pool", f"no pool named {_show(name)}")


def _pid_parameter(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not (0 < int(text) < 2**31):
        raise ApiError(
            400, "invalid_parameter", f"pid must be a process id (digits), got {_show(text)}"
        )
    return int(text)


def _not_a_worker(pid: int) -> ApiError:
    why = "see poolwarden wp" if _process_exists(pid) else "no such process"
    return ApiError(404, "unknown_worker", f"pid {pid} is not a worker of this server ({why})")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


async def _ask_pid(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
    """The pid a live control API reports, for the message that names it."""
    writer.write(b"GET /v1/server HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    response = await reader.read(MAX_BODY_BYTES)
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    pid = json.loads(body)["pid"]
    return pid if isinstance(pid, int) else None


async def start_control_server(
    loop: asyncio.AbstractEventLoop, path: str, target: ControlTarget
) -> ControlServer:
    """Serve the control API for `target` at `path` (normally `socket_path(state_dir)`).

    The directory must exist. Raises `ControlSocketInUse` if a live server
    answers at `path`, `ControlSocketError` if the socket cannot be made;
    in both cases nothing was changed. A dead server's socket is replaced.
    `loop` must be the running loop.
    """
    if loop is not asyncio.get_running_loop():
        raise RuntimeError("start_control_server must run on the loop it is given")
    server = ControlServer(path, target)
    await server._start(loop)
    return server
