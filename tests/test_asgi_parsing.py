"""Request framing on an ASGI worker's keep-alive connections.

The front end judges a connection's first head; every later one is judged by
the worker. These requests come second on a connection, after a good one, so
the worker's own parser is the one answering.
"""

from __future__ import annotations

import json
import select
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.test_http_edge_cases import launch

GOOD = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(Path(tmp_path_factory.mktemp("asgi-parsing")), "tests.apps.asgi_apps:app")
    yield running
    running.stop()


def exchange(server: Server, second: bytes, timeout: float = 5.0) -> list[bytes]:
    """Send a good request and then `second` on one connection; the responses."""
    sock = server.connect(timeout)
    try:
        sock.sendall(GOOD + second)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_refused_transfer_encoding_never_reaches_the_app(server: Server) -> None:
    before = server.stdout().count("/smuggled")
    responses = exchange(
        server,
        b"POST /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    )
    assert [status(r) for r in responses] == [200, 400]
    marker = f"marker-{id(responses)}"
    server.get(f"/{marker}")
    server.wait_for_stdout(marker)
    assert server.stdout().count("/smuggled") == before


def test_trailer_fields_do_not_become_request_headers(server: Server) -> None:
    body = b"3\r\nabc\r\n0\r\nX-Injected: yes\r\n\r\n"
    responses = exchange(
        server,
        b"POST /scope HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + body,
    )
    assert [status(r) for r in responses] == [200, 200]
    scope = json.loads(responses[1].split(b"\r\n\r\n", 1)[1])
    names = [name for name, _ in scope["headers"]]
    assert "x-injected" not in names
    assert "transfer-encoding" in names


def test_two_host_headers_are_refused(server: Server) -> None:
    responses = exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert [status(r) for r in responses] == [200, 400]


def test_an_empty_host_is_allowed(server: Server) -> None:
    responses = exchange(server, b"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n")
    assert [status(r) for r in responses] == [200, 200]


def test_a_header_line_that_never_ends_is_bounded(server: Server) -> None:
    """A client trickling one endless header line is refused, not buffered.

    The worker holds at most the head limit plus one read of it, so 431 must
    come long before 1 MiB has been sent.
    """
    sock = server.connect(10.0)
    refused = b""
    try:
        sock.sendall(GOOD + b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
        for _ in range(256):
            sock.sendall(b"v" * 4096)
            readable, _, _ = select.select([sock], [], [], 0.01)
            if readable:
                refused += sock.recv(65536)
                if b"HTTP/1.1 431 " in refused:
                    break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    assert b"HTTP/1.1 431 " in refused


def test_request_line_limit_counts_the_whole_line(server: Server) -> None:
    # 8190 bytes is the limit for "GET <target> HTTP/1.1": a target of
    # 8190 - 13 bytes fits, one more does not.
    fits = b"/" + b"a" * (8190 - 13 - 1)
    too_long = fits + b"a"
    ok = exchange(server, b"GET " + fits + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    refused = exchange(server, b"GET " + too_long + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [status(r) for r in ok] == [200, 200]
    assert [status(r) for r in refused] == [200, 414]
