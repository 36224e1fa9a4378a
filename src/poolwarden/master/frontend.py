"""The front end: accept, read each connection's first head, route, hand over.

```
 accept ─▶ recv ─▶ head complete? ─no─▶ wait (reader + deadline) ─▶ 408 / 414 / 431
                      │ yes
                      ▼
                 parse (httptools) ─bad─▶ 400, answered here
                      │
                      ▼
                 the health path? ─yes─▶ 200 / 503 / 405, answered here (any Host)
                      │ no
                      ▼
                 route(head) ─▶ pool.dispatch(sock, Dispatch)   (never waits for a worker)
```

The front end reads only the head, never the body, and never proxies: the
worker gets the socket itself with the bytes already read, and answers the
client directly. Requests answered here never reach a worker.

The health path (`server.health_path`) is answered before routing, on every
binding and whatever the `Host`, because a probe may name the host by its
address; no application can have it. Like every answer given here it goes
to the front-end log, never to the access log the workers write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus

from poolwarden import channel as ch
from poolwarden.http.head import HeadError, RequestHead, check_incomplete, find_head_end, parse_head
from poolwarden.http.limits import HeadLimits
from poolwarden.http.responses import simple_response
from poolwarden.master.answer import answer_and_close
from poolwarden.master.binding import Listener
from poolwarden.master.frontend_log import FrontEndLog
from poolwarden.master.health import Readiness, health_answer

log = logging.getLogger("poolwarden.frontend")

READ_SIZE = 65536
ACCEPT_BATCH = 64
"""Connections accepted per readiness event before other work gets a turn."""


class Route:
    """Where a request goes: a pool's dispatch, and the app's mount path."""

    __slots__ = ("dispatch", "script_name", "site")

    def __init__(
        self,
        dispatch: Callable[[socket.socket, ch.Dispatch], None],
        script_name: str,
        site: str = "",
    ) -> None:
        self.dispatch = dispatch
        self.script_name = script_name
        self.site = site


Router = Callable[[Listener, RequestHead], Route | None]


class HealthPath:
    """`server.health_path`: the path, and how to learn the server's readiness."""

    __slots__ = ("path", "readiness", "text")

    def __init__(self, text: str, readiness: Callable[[], Readiness]) -> None:
        self.text = text
        self.path = text.encode("latin-1")
        """Compared with the request's path as it was sent (no query, not unquoted)."""
        self.readiness = readiness


class PendingHead:
    """A connection whose first head has not fully arrived yet."""

    __slots__ = ("buffer", "kept_alive", "listener", "peer", "sock", "timer")

    def __init__(self, sock: socket.socket, peer: tuple[str, int], listener: Listener) -> None:
        self.sock = sock
        self.peer = peer
        self.listener = listener
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None
        self.kept_alive = False
        """A keep-alive connection a draining worker handed back idle: its
        client owes no request, so silence ends it without a 408."""


class FrontEnd:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[Listener],
        limits: HeadLimits,
        router: Router,
        frontend_log: FrontEndLog | None = None,
        health: HealthPath | None = None,
    ) -> None:
        self.loop = loop
        self.listeners = listeners
        self.limits = limits
        self.router = router
        self.frontend_log = frontend_log
        self.health = health
        """Set again by a reload that changes `server.health_path`."""
        self.pending: dict[int, PendingHead] = {}
        self.answered = 0
        self._conn_ids = itertools.count(1)

    def start(self) -> None:
        for listener in self.listeners:
            self.loop.add_reader(listener.sock.fileno(), self._on_accept, listener)

    def add_listener(self, listener: Listener) -> None:
        """A reload added a binding."""
        self.listeners.append(listener)
        self.loop.add_reader(listener.sock.fileno(), self._on_accept, listener)

    def remove_listener(self, listener: Listener) -> None:
        """A reload removed a binding; its caller closes the socket."""
        self.loop.remove_reader(listener.sock.fileno())
        self.listeners.remove(listener)

    def stop_accepting(self) -> None:
        for listener in self.listeners:
            self.loop.remove_reader(listener.sock.fileno())

    def abandon_pending(self) -> None:
        """At shutdown: a client that sent part of a head is told, others closed."""
        for pending in list(self.pending.values()):
            self._forget(pending)
            if pending.buffer:
                self._answer(pending, 503, "shutting_down", "the server is shutting down.")
            else:
                pending.sock.close()

    def redispatch(
        self, sock: socket.socket, peer: tuple[str, int], binding: str, buffered: bytes
    ) -> None:
        """A connection a worker handed back, with its next request's bytes."""
        listener = next((each for each in self.listeners if each.text == binding), None)
        if listener is None:  # the binding went away in a reload
            sock.close()
            return
        pending = PendingHead(sock, peer, listener)
        pending.buffer = buffered
        pending.kept_alive = not buffered
        self._examine(pending)

    def _on_accept(self, listener: Listener) -> None:
        accept = listener.sock.accept
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = accept()
            except BlockingIOError:
                return
            except OSError as error:
                log.warning("accept on %s failed: %s", listener.text, error)
                return
            sock.setblocking(False)
            pending = PendingHead(sock, peer if listener.unix_path is None else ("", 0), listener)
            self._read(pending)

    def _read(self, pending: PendingHead) -> None:
        try:
            data = pending.sock.recv(READ_SIZE)
        except BlockingIOError:
            self._wait(pending)
            return
        except OSError:
            data = b""
        if not data:
            self._forget(pending)
            pending.sock.close()
            return
        pending.buffer = pending.buffer + data if pending.buffer else data
        self._examine(pending)

    def _examine(self, pending: PendingHead) -> None:
        """Route the head in `pending.buffer`, or wait for the rest of it."""
        buffer = pending.buffer
        head_end = find_head_end(buffer)
        try:
            if head_end < 0:
                check_incomplete(buffer, self.limits)
                self._wait(pending)
                return
            head = parse_head(buffer, head_end, self.limits)
        except HeadError as error:
            self._forget(pending)
            self._answer(pending, error.status, error.reason_code, error.message)
            return
        self._forget(pending)
        self._route(pending, head)

    def _wait(self, pending: PendingHead) -> None:
        if pending.timer is not None:
            return
        fd = pending.sock.fileno()
        self.pending[fd] = pending
        self.loop.add_reader(fd, self._read, pending)
        pending.timer = self.loop.call_later(self.limits.head_timeout, self._head_timeout, pending)

    def _forget(self, pending: PendingHead) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
            fd = pending.sock.fileno()
            self.loop.remove_reader(fd)
            self.pending.pop(fd, None)

    def _head_timeout(self, pending: PendingHead) -> None:
        pending.timer = None
        fd = pending.sock.fileno()
        self.loop.remove_reader(fd)
        self.pending.pop(fd, None)
        if pending.kept_alive and not pending.buffer:
            pending.sock.close()  # an idle keep-alive connection ends quietly
            return
        self._answer(pending, 408, "head_timeout", "the request head did not arrive in time.")

    def _answer(
        self,
        pending: PendingHead,
        status: int,
        reason: str,
        message: str,
        head: RequestHead | None = None,
    ) -> None:
        self.answered += 1
        if self.frontend_log is not None:
            self.frontend_log.write(
                client=pending.peer,
                site="",
                host=head.host if head else "",
                method=head.method if head else "",
                path=head.path.decode("latin-1") if head else "",
                status=status,
                reason=reason,
                pool="",
            )
        log.info(
            "%s %s:%s %s %s (%s)",
            pending.listener.text,
            pending.peer[0],
            pending.peer[1],
            status,
            reason,
            message,
        )
        body = f"{HTTPStatus(status).phrase}: {message}\n"
        answer_and_close(self.loop, pending.sock, simple_response(status, body, reason_code=reason))

    def _answer_health(self, pending: PendingHead, head: RequestHead, health: HealthPath) -> None:
        """The health path: readiness from the master's own state, no worker asked."""
        self.answered += 1
        status, reason, response = health_answer(head.method, health.text, health.readiness())
        if self.frontend_log is not None:
            self.frontend_log.write(
                client=pending.peer,
                site="",
                host=head.host,
                method=head.method,
                path=health.text,
                status=status,
                reason=reason,
                pool="",
            )
        # A probe asks every few seconds: its ready answers would bury the
        # master's log; the front-end log has every one of them.
        log.log(
            logging.DEBUG if status == 200 else logging.INFO,
            "%s %s:%s %s %s (health path)",
            pending.listener.text,
            pending.peer[0],
            pending.peer[1],
            status,
            reason,
        )
        answer_and_close(self.loop, pending.sock, response)

    def _route(self, pending: PendingHead, head: RequestHead) -> None:
        health = self.health
        if health is not None and head.path == health.path:
            self._answer_health(pending, head, health)
            return
        listener = pending.listener
        route = self.router(listener, head)
        if route is None:
            self._answer(pending, 404, "no_application", "no application is configured here.", head)
            return
        if listener.wildcard:
            server_host, server_port = pending.sock.getsockname()[:2]
        else:
            server_host, server_port = listener.host, listener.port
        route.dispatch(
            pending.sock,
            ch.Dispatch(
                conn_id=next(self._conn_ids),
                peer_host=pending.peer[0],
                peer_port=pending.peer[1],
                server_host=server_host,
                server_port=server_port,
                scheme="http",
                script_name=route.script_name,
                buffered=pending.buffer,
                site=route.site,
                binding=listener.text,
            ),
        )
