"""ASGI 3.0 compliance of the worker, checked over real sockets against real servers.

Each test starts `poolwarden run` with an app from tests/apps/asgi_apps.py and
talks HTTP/1.1 to it over 127.0.0.1; the apps report what they saw (the scope,
the body messages) in their responses or in marker files named by env vars.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.apps.asgi_apps import FLOOD_CHUNK, FLOOD_CHUNKS
from tests.conftest import ServerFactory, wait_until

APPS = "tests.apps.asgi_apps"
APPS_FILE = Path(__file__).parent / "apps" / "asgi_apps.py"


class Response:
    """One parsed HTTP/1.x response."""

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: bytes, raw_body: bytes
    ) -> None:
        self.status = status
        self.header_list = headers
        self.headers = {name: value for name, value in headers}
        self.body = body
        self.raw_body = raw_body

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


class Reader:
    """Reads whole responses from a socket, in order, for pipelining tests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if not self._fill():
                raise AssertionError(f"connection closed mid-response; have {self.buffer!r}")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise AssertionError(f"connection closed mid-body; have {self.buffer!r}")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def response(self, head_only: bool = False) -> Response:
        status_line = self._take_line().decode("latin-1")
        match = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", status_line)
        assert match, status_line
        headers = []
        while line := self._take_line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.lower(), value.strip()))
        names = dict(headers)
        status = int(match.group(1))
        if head_only or status in (204, 304):
            return Response(status, headers, b"", b"")
        if "content-length" in names:
            body = self._take(int(names["content-length"]))
            return Response(status, headers, body, body)
        if names.get("transfer-encoding") == "chunked":
            raw: list[bytes] = []
            parts: list[bytes] = []
            while True:
                size_line = self._take_line()
                size = int(size_line, 16)
                data = self._take(size + 2)
                raw += [size_line, b"\r\n", data]
                assert data.endswith(b"\r\n")
                if size == 0:
                    return Response(status, headers, b"".join(parts), b"".join(raw))
                parts.append(data[:-2])
        while self._fill():
            pass
        body = bytes(self.buffer)
        self.buffer.clear()
        return Response(status, headers, body, body)


def exchange(sock: socket.socket, request: bytes, count: int = 1) -> list[Response]:
    sock.sendall(request)
    reader = Reader(sock)
    return [reader.response() for _ in range(count)]


def line_of(text: str, path: Path = APPS_FILE) -> int:
    """The 1-based line of `path` that contains `text` (exactly one)."""
    lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]


# the scope


def test_scope_contents(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    with server.connect() as sock:
        client_port = sock.getsockname()[1]
        [response] = exchange(
            sock,
            b"GET /caf%C3%A9/a%2Fb?x=1&y=%20z HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"X-Mixed-Case: Value With Case\r\n"
            b"Accept: */*\r\n\r\n",
        )
    assert response.status == 200
    scope = response.json()
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == "/caf%C3%A9/a%2Fb"
    assert scope["raw_path_type"] == "bytes"
    assert scope["query_string"] == "x=1&y=%20z"
    assert scope["query_string_type"] == "bytes"
    assert scope["root_path"] == ""
    assert scope["headers"] == [
        ["host", "127.0.0.1"],
        ["x-mixed-case", "Value With Case"],
        ["accept", "*/*"],
    ]
    assert scope["header_types"] == ["bytes,bytes"]
    assert scope["client"] == ["127.0.0.1", client_port]
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"] == {"started_by": "lifespan", "worker_pid": scope["pid"]}


def test_scope_of_http10_post_without_query(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    response = server.raw(b"POST /plain HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    scope = json.loads(body)
    assert (scope["http_version"], scope["method"], scope["path"]) == ("1.0", "POST", "/plain")
    assert (scope["raw_path"], scope["query_string"]) == ("/plain", "")
    assert scope["headers"] == [["content-length", "2"]]


def test_scope_over_a_unix_socket(start_server: ServerFactory, tmp_path: Path) -> None:
    path = str(tmp_path / "asgi.sock")
    server = start_server(f"{APPS}:app", bind=f"unix:{path}")
    response = server.raw(b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    scope = json.loads(body)
    assert (scope["path"], scope["server"], scope["client"]) == ("/u", [path, None], None)
    line = server.wait_for_stdout(r".*GET /u .*\n").group(0)
    assert line.startswith("- - - ["), line


# request bodies


def test_large_body_arrives_in_several_messages(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    body = bytes(range(256)) * (3 * 4096 + 17)  # a little over 3 MiB
    status, _, data = server.request("POST", "/body", body=body)
    assert status == 200
    report = json.loads(data)
    assert report["size"] == len(body)
    assert report["sha256"] == hashlib.sha256(body).hexdigest()
    assert report["types"] == ["http.request"]
    assert report["messages"] > 2
    assert report["more_body"] == [True] * (report["messages"] - 1) + [False]


def test_chunked_request_body(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    parts = [b"hello ", b"chunked " * 1000, b"world"]
    with server.connect() as sock:
        sock.sendall(
            b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(parts[0]), parts[0])
        )
        # The rest comes later, in pieces, while the app is already reading.
        for part in parts[1:]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        [response] = exchange(sock, b"0\r\n\r\n")
    body = b"".join(parts)
    assert response.status == 200
    report = response.json()
    assert report["size"] == len(body)
    assert report["sha256"] == hashlib.sha256(body).hexdigest()
    more_body = report["more_body"]
    assert isinstance(more_body, list)
    assert more_body[-1] is False and all(more_body[:-1])


def test_empty_body_is_one_message(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    status, _, data = server.request("POST", "/body", body=b"")
    assert status == 200
    report = json.loads(data)
    assert (report["size"], report["messages"], report["more_body"]) == (0, 1, [False])


# responses


def test_streaming_response_is_chunked_on_http11(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    with server.connect() as sock:
        [response] = exchange(sock, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    assert response.body == b"".join(b"part %d\n" % i for i in range(5))
    assert response.raw_body.count(b"\r\n") == 2 * 6  # five chunks and the last


def test_streaming_response_on_http10_is_delimited_by_close(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    data = server.raw(b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"".join(b"part %d\n" % i for i in range(5))


def settled(read: Callable[[], int], quiet: float = 0.3, timeout: float = 10.0) -> int:
    """The value of `read()` once it has stopped changing for `quiet` seconds."""
    last, since = read(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the value never settled"
        time.sleep(0.02)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_streaming_waits_for_a_slow_client(start_server: ServerFactory, tmp_path: Path) -> None:
    """`send()` must wait while the client reads nothing, not buffer the whole
    response in the worker's memory."""
    marker = tmp_path / "flood.txt"
    server = start_server(f"{APPS}:app", env={"ASGI_FLOOD_MARKER": str(marker)})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(marker.exists, what="the first chunk")
        sent = settled(lambda: int(marker.read_text()))
        total = FLOOD_CHUNK * FLOOD_CHUNKS
        # The kernel's buffers hold a few MiB at most; the rest must wait.
        assert sent * FLOOD_CHUNK <= 12 * 1024 * 1024 < total
        response = Reader(sock).response()
    assert response.status == 200
    assert len(response.body) == total
    assert marker.read_text() == str(FLOOD_CHUNKS)


def test_disconnect_is_delivered_when_the_client_goes_away(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "disconnect.txt"
    server = start_server(f"{APPS}:app", env={"ASGI_DISCONNECT_MARKER": str(marker)})
    sock = server.connect()
    sock.sendall(b"POST /disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    wait_until(lambda: marker.exists() and "read" in marker.read_text(), what="the app to wait")
    # The app has its whole body: until the client goes, receive() must block.
    assert marker.read_text() == "chunk 5\nread http.request\n"
    sock.close()
    wait_until(lambda: "received" in marker.read_text(), what="receive() to return")
    assert marker.read_text() == "chunk 5\nread http.request\nreceived http.disconnect\n"


def test_disconnect_reaches_every_waiting_receive(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "disconnect.txt"
    server = start_server(f"{APPS}:app", env={"ASGI_DISCONNECT_MARKER": str(marker)})
    sock = server.connect()
    sock.sendall(b"POST /disconnect?listeners=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    wait_until(lambda: marker.exists() and "read" in marker.read_text(), what="the app to wait")
    sock.close()
    wait_until(lambda: "received" in marker.read_text(), what="both receive() calls to return")
    assert marker.read_text() == (
        "chunk 2\nread http.request\nreceived http.disconnect,http.disconnect\n"
    )


def test_disconnect_while_the_body_is_arriving(start_server: ServerFactory, tmp_path: Path) -> None:
    marker = tmp_path / "disconnect.txt"
    server = start_server(f"{APPS}:app", env={"ASGI_DISCONNECT_MARKER": str(marker)})
    sock = server.connect()
    sock.sendall(b"POST /disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello")
    wait_until(lambda: marker.exists() and "chunk" in marker.read_text(), what="the first chunk")
    assert marker.read_text() == "chunk 5\n"
    sock.close()
    wait_until(lambda: "received" in marker.read_text(), what="the app to end")
    assert marker.read_text() == (
        "chunk 5\nread http.request,http.disconnect\nreceived http.disconnect\n"
    )


# errors in the app


def test_exception_in_the_app_is_a_500_and_the_worker_survives(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    _, _, pid_before = server.get("/pid")
    status, headers, body = server.get("/error")
    assert status == 500
    assert headers["connection"] == "close"
    assert body == b"Internal Server Error\n"
    server.wait_for_stderr(r"error in the app serving GET /error")
    server.wait_for_stderr(r"RuntimeError: the app failed on purpose")
    status, _, pid_after = server.get("/pid")
    assert (status, pid_after) == (200, pid_before)


@pytest.mark.parametrize("part", ["value", "name"])
def test_response_header_with_a_line_break_is_a_500(start_server: ServerFactory, part: str) -> None:
    server = start_server(f"{APPS}:app")
    with server.connect() as sock:
        [response] = exchange(sock, f"GET /bad-header/{part} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (response.status, response.body) == (500, b"Internal Server Error\n")
    assert "set-cookie" not in response.headers
    server.wait_for_stderr(r"RuntimeError: invalid response header")


def test_app_that_returns_without_responding_is_a_500(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    status, _, body = server.get("/noresponse")
    assert (status, body) == (500, b"Internal Server Error\n")
    server.wait_for_stderr(r"the app returned without starting a response to GET /noresponse")
    assert server.get("/pid")[0] == 200


# connections


def test_pipelined_requests_are_answered_in_order(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    with server.connect() as sock:
        responses = exchange(
            sock,
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /last?n=4 HTTP/1.1\r\nHost: x\r\n\r\n",
            count=4,
        )
    assert [r.status for r in responses] == [200, 200, 200, 200]
    assert responses[0].json()["path"] == "/first"
    assert responses[1].json()["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert responses[2].body.startswith(b"part 0\n")
    assert (responses[3].json()["path"], responses[3].json()["query_string"]) == ("/last", "n=4")


def test_keep_alive_reuses_the_connection(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    conn = server.http()
    try:
        clients = []
        for index in range(3):
            conn.request("GET", f"/n{index}")
            response = conn.getresponse()
            scope = json.loads(response.read())
            assert (response.status, scope["path"]) == (200, f"/n{index}")
            assert response.getheader("connection") is None
            clients.append(tuple(scope["client"]))
        assert len(set(clients)) == 1
    finally:
        conn.close()


def test_http10_keep_alive_when_asked(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:app")
    with server.connect() as sock:
        request = b"GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        first, second = exchange(sock, request + request, count=2)
    for response in (first, second):
        assert response.status == 200
        assert response.headers["connection"] == "keep-alive"
        assert response.json()["http_version"] == "1.0"


# lifespan


def test_lifespan_shutdown_runs_at_sigterm(start_server: ServerFactory, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown.txt"
    server = start_server(f"{APPS}:app", env={"ASGI_SHUTDOWN_MARKER": str(marker)})
    status, _, pid = server.get("/pid")
    assert status == 200
    assert not marker.exists()
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert marker.read_text() == f"shutdown {int(pid)}\n"
    assert (
        not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    )


def test_app_without_lifespan_support_still_serves(start_server: ServerFactory) -> None:
    server = start_server(f"{APPS}:no_lifespan_app")
    status, _, body = server.get("/")
    assert (status, body) == (200, b"no lifespan, still serving\n")


def test_lifespan_startup_failed_is_a_startup_failure(start_server: ServerFactory) -> None:
    server = start_server(
        f"{APPS}:startup_failed_app", "--on-startup-failure", "exit-now", wait_ready=False
    )
    assert server.wait() == 3
    stderr = server.stderr()
    assert (
        f"poolwarden: cannot start app '{APPS}:startup_failed_app' (lifespan failed): "
        "LifespanStartupFailed: database is unreachable\n"
    ) in stderr
    assert server.worker_pids() == []


def test_exception_in_lifespan_startup_is_a_startup_failure(start_server: ServerFactory) -> None:
    server = start_server(
        f"{APPS}:startup_raises_app", "--on-startup-failure", "exit-now", wait_ready=False
    )
    assert server.wait() == 3
    stderr = server.stderr()
    line = line_of('raise ConnectionRefusedError("cache at')
    assert (
        f"poolwarden: cannot start app '{APPS}:startup_raises_app' "
        f"(lifespan failed in {APPS}, line {line}): "
        "ConnectionRefusedError: cache at 127.0.0.1:1 refused the connection\n"
    ) in stderr
    traceback = stderr.split("poolwarden: cannot start app", 1)[1]
    assert "in connect_to_cache" in traceback and "in startup_raises_app" in traceback
    assert "src/poolwarden" not in traceback
