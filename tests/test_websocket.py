"""WebSockets for ASGI apps, checked with real servers and a real client.

The client is wsproto over a plain socket (`Client`), a different
implementation from the server's (websockets), so that a mistake shared by
both ends cannot pass unseen; frames the client library would never send
(unmasked, invalid UTF-8) are written by hand. The apps are in
tests/apps/ws_apps.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from poolwarden.control_client import ControlClient
from tests.conftest import POOLWARDEN, REPO, Server, ServerFactory, wait_until

APP = "tests.apps.ws_apps:app"
DEADLINE = 10.0


class Client:
    """A WebSocket client: wsproto's state machine over a blocking socket."""

    def __init__(
        self,
        server: Server,
        path: str = "/echo",
        *,
        subprotocols: tuple[str, ...] = (),
        deflate: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
        answer_pings: bool = True,
    ) -> None:
        self.sock = server.connect(DEADLINE)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.answer_pings = answer_pings
        self.events: deque[Event] = deque()
        self.pings: list[bytes] = []
        self.head = b""
        """The raw handshake response head."""
        self.bytes_received = 0
        self.closed = False
        extensions = [PerMessageDeflate()] if deflate else []
        self.sock.sendall(
            self.ws.send(
                Request(
                    host="localhost",
                    target=path,
                    subprotocols=list(subprotocols),
                    extensions=extensions,
                    extra_headers=[(n.encode(), v.encode()) for n, v in headers],
                )
            )
        )

    # reading

    def _read(self) -> bool:
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not self.head:
            self._pending_head = getattr(self, "_pending_head", b"") + data
            end = self._pending_head.find(b"\r\n\r\n")
            if end >= 0:
                self.head = self._pending_head[: end + 4]
        self.bytes_received += len(data)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, Ping):
                self.pings.append(event.payload)
                if self.answer_pings:
                    self.sock.sendall(self.ws.send(event.response()))
                continue
            self.events.append(event)
        if not data:
            self.closed = True
        return bool(data)

    def event(self, timeout: float = DEADLINE) -> Event:
        """The next event other than a ping; fails at the deadline."""
        deadline = time.monotonic() + timeout
        while not self.events:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError(f"no event within {timeout}s (closed: {self.closed})")
            self.sock.settimeout(remaining)
            try:
                self._read()
            except TimeoutError:
                pass
        return self.events.popleft()

    def wait_for_pings(self, count: int, timeout: float = DEADLINE) -> None:
        """Read (answering pings) until `count` pings came; other events queue up."""
        deadline = time.monotonic() + timeout
        while len(self.pings) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError(f"{len(self.pings)} pings within {timeout}s, not {count}")
            self.sock.settimeout(remaining)
            try:
                self._read()
            except TimeoutError:
                pass

    def accepted(self) -> AcceptConnection:
        event = self.event()
        assert isinstance(event, AcceptConnection), (event, self.head)
        return event

    def rejected(self) -> tuple[int, dict[str, str], bytes]:
        """A refused handshake: (status, lower-cased headers, body)."""
        event = self.event()
        assert isinstance(event, RejectConnection), event
        headers = {n.decode().lower(): v.decode() for n, v in event.headers}
        body = b""
        while event.has_body:
            data = self.event()
            assert isinstance(data, RejectData)
            body += data.data
            if data.body_finished:
                break
        return event.status_code, headers, body

    def message(self, timeout: float = DEADLINE) -> str | bytes:
        """The next whole message, its frames reassembled."""
        parts: list[Any] = []
        while True:
            event = self.event(timeout)
            assert isinstance(event, Message), event
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)

    def close_frame(self, timeout: float = DEADLINE) -> CloseConnection:
        """The server's close frame (answered, as a client must)."""
        event = self.event(timeout)
        assert isinstance(event, CloseConnection), event
        try:
            self.sock.sendall(self.ws.send(event.response()))
        except OSError:
            pass
        return event

    # writing

    def send(self, message: str | bytes, *, finished: bool = True) -> None:
        event: Message[Any] = (
            TextMessage(data=message, message_finished=finished)
            if isinstance(message, str)
            else BytesMessage(data=message, message_finished=finished)
        )
        self.sock.sendall(self.ws.send(event))

    def ping(self, payload: bytes) -> None:
        self.sock.sendall(self.ws.send(Ping(payload=payload)))

    def close(self, code: int = 1000, reason: str = "") -> CloseConnection:
        """Start the close handshake; the server's answering close frame."""
        self.sock.sendall(self.ws.send(CloseConnection(code=code, reason=reason)))
        event = self.event()
        assert isinstance(event, CloseConnection), event
        return event

    def shut(self) -> None:
        self.sock.close()


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame written by hand (RFC 6455 §5.2), masked as it must be."""
    key = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmasked server frames in `data`: (first byte, payload)."""
    frames = []
    while len(data) >= 2:
        first, second = data[0], data[1] & 0x7F
        at = 2
        if second == 126:
            (second,) = struct.unpack_from("!H", data, 2)
            at = 4
        elif second == 127:
            (second,) = struct.unpack_from("!Q", data, 2)
            at = 10
        frames.append((first, data[at : at + second]))
        data = data[at + second :]
    return frames


def seen(server: Server) -> dict[str, Any]:
    status, _, body = server.get("/seen")
    assert status == 200
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


# --- servers -------------------------------------------------------------------


def _start(command: list[str], directory: Path) -> Server:
    """A `poolwarden` master started as conftest's fixtures do, for a module."""
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out_path, err_path = directory / "stdout.log", directory / "stderr.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    server = Server(process, directory / "state", out_path, err_path)
    match = server.wait_for_stderr(r"listening on http://127\.0\.0\.1:(\d+)")
    server.port = int(match.group(1))
    server.wait_for_workers(1)
    return server


@pytest.fixture(scope="module")
def asgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `poolwarden run` of the WebSocket apps, shared by the module's tests."""
    directory = tmp_path_factory.mktemp("ws-run")
    server = _start(
        [*POOLWARDEN, "run", APP, "--state-dir", str(directory / "state"), "--bind", "127.0.0.1:0"],
        directory,
    )
    yield server
    server.stop()


def ws_config(keys: str = "", path: str = "/", app: str = APP) -> str:
    return f"""
[server]
state_dir = "{{state_dir}}"

[sites.main]
bindings = ["127.0.0.1:0"]

[[sites.main.applications]]
path = "{path}"
pool = "ws"

[pools.ws]
app = "{app}"
working_dir = "{{repo}}"
start_mode = "always_running"
{keys}
"""


# --- messages ------------------------------------------------------------------


def test_text_and_bytes_are_echoed(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    client.send("hello, wörld")
    assert client.message() == "hello, wörld"
    client.send(b"\x00\x01binary\xff")
    assert client.message() == b"\x00\x01binary\xff"
    client.send("")
    assert client.message() == ""
    assert client.close(1000).code == 1000


def test_a_one_mib_message_round_trips(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    payload = os.urandom(1 << 20)
    client.send(payload)
    assert client.message() == payload
    client.close()


def test_a_message_over_the_default_max_size_closes_with_1009(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    client.send(b"x" * (20 << 20))
    assert client.close_frame().code == 1009


def test_a_fragmented_message_is_reassembled(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    client.send("frag", finished=False)
    client.send("men", finished=False)
    client.send("ted ✓", finished=True)
    assert client.message() == "fragmented ✓"
    client.send(b"ab", finished=False)
    client.send(b"cd", finished=True)
    assert client.message() == b"abcd"
    client.close()


def test_messages_wait_for_a_slow_app_without_loss(asgi: Server) -> None:
    """Far more than the queue's bound is sent while the app reads nothing:
    every message still arrives, whole and in order."""
    client = Client(asgi, "/slow")
    client.accepted()
    count, size = 120, 64 * 1024
    for index in range(count):
        last = b"!" if index == count - 1 else b"."
        client.send(index.to_bytes(4, "big") + last + b"x" * (size - 5))
    assert client.message(timeout=20) == f"{count} {count * size}"
    client.close()


def test_a_client_ping_is_answered_with_its_payload(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    client.ping(b"are you there")
    event = client.event()
    assert isinstance(event, Pong) and event.payload == b"are you there"
    client.close()


def test_permessage_deflate_is_negotiated_and_round_trips(asgi: Server) -> None:
    client = Client(asgi, deflate=True)
    accepted = client.accepted()
    assert re.search(rb"(?im)^sec-websocket-extensions: permessage-deflate", client.head)
    assert [ext.name for ext in accepted.extensions] == ["permessage-deflate"]
    before = client.bytes_received
    text = "compress me " * 20_000
    client.send(text)
    assert client.message() == text
    assert client.bytes_received - before < len(text) // 20  # it came compressed
    client.send(b"\x00" * 50_000)
    assert client.message() == b"\x00" * 50_000
    client.close()


def test_without_an_offer_there_is_no_compression(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    assert b"permessage-deflate" not in client.head.lower()
    client.close()


def test_invalid_utf8_in_a_text_frame_closes_with_1007(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    client.sock.sendall(masked_frame(0x1, b"ok \xff\xfe"))
    assert client.close_frame().code == 1007


def test_invalid_utf8_split_across_fragments_closes_with_1007(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    # "é" is C3 A9: a fragment may end mid-character; C3 followed by 41 may not.
    client.sock.sendall(masked_frame(0x1, b"caf\xc3", fin=False))
    client.sock.sendall(masked_frame(0x0, b"A", fin=True))
    assert client.close_frame().code == 1007


def test_an_unmasked_client_frame_closes_with_1002(asgi: Server) -> None:
    client = Client(asgi)
    client.accepted()
    client.sock.sendall(b"\x81\x05hello")  # FIN, text, no mask bit
    client.sock.settimeout(DEADLINE)
    data = b""
    while True:
        chunk = client.sock.recv(4096)
        if not chunk:
            break
        data += chunk
    [(first, payload)] = raw_frames(data)
    assert first == 0x88  # FIN, close
    assert struct.unpack("!H", payload[:2])[0] == 1002


# --- the handshake -------------------------------------------------------------


def test_the_subprotocol_and_headers_the_app_accepts_with_are_in_the_101(asgi: Server) -> None:
    client = Client(asgi, "/subprotocol", subprotocols=("chat.v1", "chat.v2"))
    accepted = client.accepted()
    assert accepted.subprotocol == "chat.v2"
    head = client.head.decode("latin-1").lower()
    assert head.startswith("http/1.1 101 ")
    assert "\r\nsec-websocket-protocol: chat.v2\r\n" in head
    assert "\r\nx-session: abc123\r\n" in head
    assert "\r\nset-cookie: s=1\r\n" in head
    client.close()


def test_closing_before_accepting_is_a_403(asgi: Server) -> None:
    client = Client(asgi, "/refuse")
    status, _, _ = client.rejected()
    assert status == 403
    wait_until(lambda: "send_after_refusal" in seen(asgi), what="the app's send to raise")
    assert seen(asgi)["send_after_refusal"] == "ClosedByApp"


def test_the_denial_extension_sends_the_apps_response(asgi: Server) -> None:
    client = Client(asgi, "/deny")
    status, headers, body = client.rejected()
    assert (status, body) == (401, b"log in first")
    assert headers["www-authenticate"] == "Bearer"
    assert headers["content-length"] == str(len(body))


def test_an_app_that_raises_before_accepting_gives_a_500(asgi: Server) -> None:
    client = Client(asgi, "/raise-before")
    assert client.rejected()[0] == 500
    asgi.wait_for_stderr("broken before accept")


def test_an_app_that_raises_after_accepting_closes_with_1011(asgi: Server) -> None:
    client = Client(asgi, "/raise-after")
    client.accepted()
    client.send("go")
    assert client.close_frame().code == 1011
    asgi.wait_for_stderr("broken after accept")


def test_an_app_that_returns_without_closing_closes_with_1000(asgi: Server) -> None:
    client = Client(asgi, "/return")
    client.accepted()
    assert client.message() == "bye"
    assert client.close_frame().code == 1000


def test_a_bad_handshake_is_refused_by_the_server(asgi: Server) -> None:
    sock = asgi.connect(DEADLINE)
    sock.sendall(
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key" in data


def test_the_client_close_code_reaches_the_app(asgi: Server) -> None:
    client = Client(asgi, "/echo?code4000")
    client.accepted()
    assert client.close(4000, "see you").code == 4000
    disconnect = wait_until(
        lambda: seen(asgi).get("disconnect code4000"), what="the app to see the disconnect"
    )
    assert disconnect == {"type": "websocket.disconnect", "code": 4000, "reason": "see you"}


def test_after_the_apps_close_receive_disconnects_and_send_raises(asgi: Server) -> None:
    client = Client(asgi, "/close-then-send")
    client.accepted()
    close = client.close_frame()
    assert (close.code, close.reason) == (4001, "done")
    wait_until(lambda: "after_close" in seen(asgi), what="the app to finish")
    after = seen(asgi)["after_close"]
    assert after["receive"]["type"] == after["again"]["type"] == "websocket.disconnect"
    assert after["receive"]["code"] == 4001  # the client's echo of the close
    assert after["send_raised"] == "ClosedByApp"


def test_the_scope(asgi: Server) -> None:
    client = Client(
        asgi,
        "/scope?room=5&x=%20y",
        subprotocols=("one", "two"),
        headers=(("X-Custom", "Value"),),
    )
    client.accepted()
    scope = json.loads(client.message())
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert (scope["path"], scope["raw_path"]) == ("/scope", "/scope")
    assert scope["query_string"] == "room=5&x=%20y"
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["one", "two"]
    assert ["x-custom", "Value"] in scope["headers"]
    assert ["host", "localhost"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert scope["server"] == ["127.0.0.1", asgi.port]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["state_keys"] == ["started"]  # the lifespan state, as HTTP has it
    assert "method" not in scope
    client.close()


def test_the_access_log_has_one_line_per_websocket_with_its_close_code(asgi: Server) -> None:
    client = Client(asgi, "/echo?logged=1")
    client.accepted()
    client.close(4002)
    asgi.wait_for_stdout(r'"GET /echo\?logged=1 HTTP/1\.1" 101 4002 ')


def test_a_handshake_behind_an_unanswered_request_is_served_as_http(asgi: Server) -> None:
    sock = asgi.connect(DEADLINE)
    sock.sendall(
        b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2  # the connection then closes
    assert b" 101 " not in data


# --- servers with settings -----------------------------------------------------


def test_the_server_pings_and_a_silent_client_is_closed_with_1011(
    start_serve: Callable[..., Server],
) -> None:
    server = start_serve(ws_config('ws_ping_interval = "0.2s"\nws_ping_timeout = "0.6s"'))
    server.wait_for_workers(1)
    # a client that answers stays open, ping after ping
    talker = Client(server)
    talker.accepted()
    talker.wait_for_pings(3)
    talker.send("still here")
    assert talker.message() == "still here"
    talker.close()
    # one that does not is closed once the time-out passes
    silent = Client(server, answer_pings=False)
    silent.accepted()
    started = time.monotonic()
    assert silent.close_frame().code == 1011
    assert 0.6 < time.monotonic() - started < 5
    assert silent.pings


def test_root_path_comes_from_the_application_path(start_serve: Callable[..., Server]) -> None:
    server = start_serve(ws_config('access_log_format = "json"', path="/ws"))
    server.wait_for_workers(1)
    client = Client(server, "/ws/scope?a=1")
    client.accepted()
    scope = json.loads(client.message())
    assert (scope["root_path"], scope["path"]) == ("/ws", "/ws/scope")
    assert scope["query_string"] == "a=1"
    client.close(4003)
    # the access log's line for it, in the JSON format
    line = server.wait_for_stdout(r'\{[^\n]*"target": "/ws/scope\?a=1"[^\n]*\}').group(0)
    entry = json.loads(line)
    assert (entry["status"], entry["close_code"], entry["method"]) == (101, 4003, "GET")
    assert entry["duration_ms"] > 0 and entry["size"] == len(json.dumps(scope).encode())


def test_past_max_websockets_a_handshake_gets_503_queue_full(
    start_serve: Callable[..., Server],
) -> None:
    server = start_serve(ws_config("max_websockets = 1"))
    server.wait_for_workers(1)
    first = Client(server)
    first.accepted()
    second = Client(server)
    status, headers, _ = second.rejected()
    assert (status, headers["x-poolwarden-reason"]) == (503, "queue_full")
    first.close()
    wait_until(lambda: _accepts(server), what="room for a WebSocket again")


def _accepts(server: Server) -> bool:
    client = Client(server)
    event = client.event()
    client.shut()
    return isinstance(event, AcceptConnection)


def test_a_recycle_closes_open_websockets_with_1001_and_the_new_worker_serves(
    start_serve: Callable[..., Server],
) -> None:
    server = start_serve(ws_config('[pools.ws.process_model]\nshutdown_time_limit = "2s"'))
    [old] = server.wait_for_workers(1)
    client = Client(server, "/pid")
    client.accepted()
    assert client.message() == str(old)
    ControlClient(str(server.state_dir)).post("/v1/pools/ws/recycle")
    [new] = server.wait_for_workers(1, exclude={old})
    # the open WebSocket is kept until just before the time limit
    client.send("still open")
    assert client.message() == "still open"
    started = time.monotonic()
    close = client.close_frame(timeout=5)
    assert close.code == 1001
    assert time.monotonic() - started < 3
    wait_until(lambda: old not in server.worker_pids(), what="the old worker to exit")
    fresh = Client(server, "/pid")
    fresh.accepted()
    assert fresh.message() == str(new)
    fresh.close()


def test_a_wsgi_pool_answers_a_handshake_with_400_and_serves_on(
    start_server: ServerFactory,
) -> None:
    server = start_server("tests.apps.ws_apps:wsgi_app", "--interface", "wsgi")
    [worker] = server.worker_pids()
    client = Client(server)
    status, headers, body = client.rejected()
    assert status == 400
    assert headers["x-poolwarden-reason"] == "websocket_on_wsgi"
    assert b"WSGI" in body and b"ASGI" in body
    client.sock.settimeout(DEADLINE)
    assert client.sock.recv(4096) == b""  # closed cleanly, not reset
    status, _, body = server.get("/")
    assert status == 200 and body.startswith(f"wsgi {worker}".encode())
    assert server.worker_pids() == [worker]
    server.wait_for_stdout(r'"GET /echo HTTP/1\.1" 400 ')


def test_a_starlette_websocket_route(start_server: ServerFactory) -> None:
    server = start_server("tests.apps.ws_apps:starlette_app", "--factory")
    client = Client(server, "/rooms/lobby", subprotocols=("chat",))
    assert client.accepted().subprotocol == "chat"
    client.send("hi")
    assert client.message() == "lobby: hi"
    assert client.close(1000).code == 1000


def test_a_connection_that_drops_is_a_disconnect_1006(asgi: Server) -> None:
    client = Client(asgi, "/echo?dropped")
    client.accepted()
    client.send("x")
    assert client.message() == "x"
    client.sock.shutdown(socket.SHUT_RDWR)
    client.shut()
    disconnect = wait_until(
        lambda: seen(asgi).get("disconnect dropped"), what="the app to see the connection drop"
    )
    assert isinstance(disconnect, dict) and disconnect["code"] == 1006
