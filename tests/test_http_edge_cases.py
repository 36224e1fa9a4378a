"""HTTP/1.1 at the edges, against a real `poolwarden run` over loopback.

The front end answers what it refuses (400, 408, 414, 431) itself, so the
worker never sees those requests; the worker answers the same refusals for
the second and later requests of a keep-alive connection. Both are checked
here, together with keep-alive, pipelining, `Expect: 100-continue`, HEAD and
connection closing.

The helpers here (`launch`, `RawConnection`) are shared with
`test_wsgi_compliance.py`: a module shares one server where tests do not
interfere, because a server takes a second or two to start.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import POOLWARDEN, REPO, Server

APP = "tests.apps.wsgi_apps:app"
READ_TIMEOUT = 10.0


def launch(directory: Path, app: str, *args: str) -> Server:
    """Start `poolwarden run APP ARGS` on 127.0.0.1:0 and wait until it serves.

    The same pattern as conftest's `start_server`, for fixtures wider than a
    function (which `start_server`, built on `tmp_path`, cannot serve).
    """
    directory.mkdir(parents=True, exist_ok=True)
    stdout_path = directory / "stdout.log"
    stderr_path = directory / "stderr.log"
    command = [*POOLWARDEN, "run", app, "--state-dir", str(directory / "state"), *args]
    command += ["--bind", "127.0.0.1:0"]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    server = Server(process, directory / "state", stdout_path, stderr_path)
    try:
        match = server.wait_for_stderr(r"listening on http://127\.0\.0\.1:(\d+)")
        server.port = int(match.group(1))
        server.wait_for_workers(1)
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header `name` (the last one if repeated), or None."""
        value = None
        for key, text in self.headers:
            if key == name:
                value = text
        return value

    def json(self) -> dict[str, object]:
        result = json.loads(self.body)
        assert isinstance(result, dict)
        return result


class RawConnection:
    """One client connection that sends bytes as given and parses responses.

    http.client cannot pipeline, send malformed requests or show a 100
    Continue; this can, and it reads responses strictly in order.
    """

    def __init__(self, server: Server, timeout: float = READ_TIMEOUT) -> None:
        self.sock = server.connect(timeout)
        self.reader = self.sock.makefile("rb")

    @property
    def port(self) -> int:
        port = self.sock.getsockname()[1]
        assert isinstance(port, int)
        return port

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, *, head_only: bool = False) -> Response:
        """Read one response; `head_only` for the answer to a HEAD."""
        line = self.reader.readline(65537)
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) ?(.*)\r\n", line)
        assert match, f"bad status line {line!r}"
        status = int(match.group(1))
        headers = []
        while True:
            line = self.reader.readline(65537)
            assert line.endswith(b"\r\n"), f"bad header line {line!r}"
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(status, match.group(2).decode("latin-1"), headers, b"")
        if head_only or status < 200 or status in (204, 304):
            return response
        if response.header("transfer-encoding") == "chunked":
            response.body = self._chunked()
        elif response.header("content-length") is not None:
            response.body = self._exactly(int(response.header("content-length") or 0))
        else:
            response.body = self.reader.read()
        return response

    def _exactly(self, size: int) -> bytes:
        data = self.reader.read(size)
        assert len(data) == size, f"body ended after {len(data)} of {size} bytes"
        return data

    def _chunked(self) -> bytes:
        pieces = []
        while True:
            size_line = self.reader.readline(1024)
            assert size_line.endswith(b"\r\n"), f"bad chunk size line {size_line!r}"
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                assert self.reader.readline(1024) == b"\r\n", "trailers are not expected"
                return b"".join(pieces)
            pieces.append(self._exactly(size))
            assert self._exactly(2) == b"\r\n"

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes within `timeout` with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.reader.read(1)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(READ_TIMEOUT)
        assert data == b"", f"unexpected bytes after the response: {data!r}"
        return True

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def post(path: str, body: bytes, *headers: str) -> bytes:
    return get(path, f"Content-Length: {len(body)}", *headers, method="POST") + body


def token() -> str:
    return uuid.uuid4().hex[:12]


def front_end_answered(
    server: Server, since: int, client_port: int, status: int, reason: str
) -> bool:
    """The master logged that its front end answered this client, after `since`.

    Only the log written during the test counts: ephemeral client ports are
    reused, so an older line could name the same port.
    """
    pattern = rf"\[master \d+\] INFO: .* 127\.0\.0\.1:{client_port} {status} {reason} "
    return re.search(pattern, server.stderr()[since:]) is not None


def served_by_a_worker_barrier(server: Server) -> None:
    """A request whose access-log line proves earlier ones had their chance to log."""
    marker = token()
    status, _, _ = server.get(f"/info?barrier={marker}")
    assert status == 200
    server.wait_for_stdout(rf"barrier={marker}", timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch(tmp_path_factory.mktemp("edge"), APP)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Short head and keep-alive timeouts, for the tests that wait for them."""
    server = launch(
        tmp_path_factory.mktemp("quick"),
        APP,
        "--head-timeout",
        "1",
        "--keepalive-timeout",
        "1",
    )
    yield server
    server.stop()


@pytest.fixture
def worker_pid(server: Server) -> Iterator[int]:
    """The worker's pid, and a check at the end that it is still the only one."""
    pids = server.worker_pids()
    assert len(pids) == 1
    yield pids[0]
    assert server.worker_pids() == pids, "the worker was replaced"


# keep-alive and pipelining


def test_keepalive_serves_many_requests_on_one_connection(server: Server, worker_pid: int) -> None:
    conn = server.http()
    try:
        conn.request("GET", "/info?n=0")
        first = conn.getresponse()
        assert first.status == 200
        origin = json.loads(first.read())
        sock = conn.sock
        for n in range(1, 6):
            body = f"body {n}".encode()
            conn.request("POST", f"/info?n={n}", body=body)
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("connection") is None
            answer = json.loads(response.read())
            assert answer["query"] == f"n={n}"
            assert answer["body"] == body.decode()
            assert answer["remote_port"] == origin["remote_port"]
            assert answer["pid"] == worker_pid
            assert conn.sock is sock, "http.client had to reconnect"
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    requests = []
    for n in range(10):
        if n % 3 == 1:
            requests.append(post(f"/info?n={n}", f"posted {n}".encode()))
        elif n == 5:
            requests.append(get("/download?size=1234&cl=1", method="HEAD"))
        elif n == 8:
            chunked = b"4\r\nchun\r\n3\r\nked\r\n0\r\n\r\n"
            requests.append(get(f"/info?n={n}", "Transfer-Encoding: chunked", method="PUT"))
            requests[-1] += chunked
        else:
            requests.append(get(f"/info?n={n}"))
    with RawConnection(server) as conn:
        conn.send(b"".join(requests))
        for n in range(10):
            response = conn.response(head_only=n == 5)
            assert response.status == 200, n
            if n == 5:
                assert response.header("content-length") == "1234"
                continue
            answer = response.json()
            assert answer["query"] == f"n={n}"
            assert answer["remote_port"] == str(conn.port)
            if n % 3 == 1:
                assert (answer["method"], answer["body"]) == ("POST", f"posted {n}")
            elif n == 8:
                assert (answer["method"], answer["body"]) == ("PUT", "chunked")
            else:
                assert (answer["method"], answer["body"]) == ("GET", "")
        conn.send(get("/info?n=last", "Connection: close"))
        assert conn.response().json()["query"] == "n=last"
        assert conn.closed_by_server()


def test_pipelined_requests_split_across_segments(server: Server) -> None:
    """Heads and bodies cut at awkward places still parse as the same requests."""
    stream = b"".join(post(f"/info?n={n}", b"%d" % n * 100) for n in range(6))
    with RawConnection(server) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(stream), 97):
            conn.send(stream[start : start + 97])
        for n in range(6):
            answer = conn.response().json()
            assert (answer["query"], answer["body"]) == (f"n={n}", str(n) * 100)


def test_unread_body_is_discarded_and_the_connection_kept(server: Server) -> None:
    """An app that ignores a body up to the discard limit keeps the connection usable."""
    with RawConnection(server) as conn:
        for size in (10, 100_000, 800_000):
            conn.send(post("/ignore-body", b"b" * size))
            response = conn.response()
            assert (response.status, response.body) == (200, b"not reading your body\n")
            assert response.header("connection") is None, size
        conn.send(get("/info?after=discard"))
        assert conn.response().json()["query"] == "after=discard"


# Expect: 100-continue


def test_expect_100_continue(server: Server) -> None:
    body = b"hello world"
    with RawConnection(server) as conn:
        for round_ in range(2):  # the front end's request, then the worker's
            conn.send(
                get(
                    f"/upload?mode=read&n=4&round={round_}",
                    f"Content-Length: {len(body)}",
                    "Expect: 100-continue",
                    method="POST",
                )
            )
            interim = conn.response()
            assert (interim.status, interim.reason) == (100, "Continue")
            conn.send(body)
            final = conn.response()
            assert final.status == 200
            assert final.json()["length"] == len(body)
            assert final.json()["reads"] == 3


def test_expect_100_continue_answered_without_reading_the_body(server: Server) -> None:
    """No 100 when the app does not read; the server says it closes, and does."""
    with RawConnection(server) as conn:
        conn.send(
            get("/ignore-body", "Content-Length: 100000", "Expect: 100-continue", method="POST")
        )
        response = conn.response()
        assert (response.status, response.body) == (200, b"not reading your body\n")
        assert response.header("connection") == "close"
        assert conn.closed_by_server()


def test_expect_100_continue_is_ignored_in_http10(server: Server) -> None:
    """An HTTP/1.0 client cannot take a 1xx answer, so it never gets one."""
    with RawConnection(server) as conn:
        conn.send(
            get(
                "/upload?mode=read&n=4",
                "Content-Length: 5",
                "Expect: 100-continue",
                method="POST",
                version="1.0",
            )
        )
        # Proving an absence takes a wait: a 100 would come at once.
        conn.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.sock.recv(1, socket.MSG_PEEK)
        conn.sock.settimeout(READ_TIMEOUT)
        conn.send(b"hello")
        response = conn.response()
        assert (response.status, response.json()["length"]) == (200, 5)


# malformed requests

MALFORMED = {
    "bad_method": b"G@T /%s HTTP/1.1\r\nHost: a\r\n\r\n",
    "space_in_target": b"GET /%s x HTTP/1.1\r\nHost: a\r\n\r\n",
    # HTTP/9.1 is well-formed: 505 (test_http_conformance.py), not malformed.
    "bad_version": b"GET /%s HTTP/1.x\r\nHost: a\r\n\r\n",
    "two_digit_version": b"GET /%s HTTP/12.1\r\nHost: a\r\n\r\n",
    "header_without_colon": b"GET /%s HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n",
    "space_in_header_name": b"GET /%s HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n",
    "space_before_colon": b"GET /%s HTTP/1.1\r\nHost: a\r\nX-Y : z\r\n\r\n",
    "obs_fold": b"GET /%s HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "nul_in_value": b"GET /%s HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "bare_lf_in_headers": b"GET /%s HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n",
    "bare_lf_everywhere": b"GET /%s HTTP/1.1\nHost: a\n\n",
    "no_host": b"GET /%s HTTP/1.1\r\nUser-Agent: t\r\n\r\n",
    "two_hosts": b"GET /%s HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "cl_and_te": (
        b"POST /%s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    ),
    "te_and_cl": (
        b"POST /%s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    ),
    "differing_content_lengths": (
        b"POST /%s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "content_length_list": b"POST /%s HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello",
    "negative_content_length": b"POST /%s HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "te_not_chunked_last": (
        b"POST /%s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    "te_unknown": b"POST /%s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
}


def assert_refused(response: Response, status: int, reason: str) -> None:
    assert response.status == status
    assert response.header("x-poolwarden-reason") == reason
    assert response.header("connection") == "close"
    assert response.header("server") == "poolwarden"
    assert response.header("date")


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_first_request_refused_by_the_front_end(
    server: Server, worker_pid: int, case: str
) -> None:
    marker = f"malformed-{token()}"
    since = len(server.stderr())
    with RawConnection(server) as conn:
        conn.send(MALFORMED[case] % marker.encode())
        response = conn.response()
        assert_refused(response, 400, "bad_request")
        assert response.body.startswith(b"Bad Request: ")
        assert conn.closed_by_server()
        port = conn.port
    assert front_end_answered(server, since, port, 400, "bad_request")
    served_by_a_worker_barrier(server)
    log = server.stdout()
    assert marker not in log and "/smuggled" not in log


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_second_request_refused_by_the_worker(
    server: Server, worker_pid: int, case: str
) -> None:
    marker = f"malformed-{token()}"
    since = len(server.stderr())
    with RawConnection(server) as conn:
        conn.send(get(f"/info?first={marker}"))
        assert conn.response().json()["query"] == f"first={marker}"
        conn.send(MALFORMED[case] % marker.encode())
        response = conn.response()
        assert_refused(response, 400, "bad_request")
        assert conn.closed_by_server()
        port = conn.port
    served_by_a_worker_barrier(server)
    assert not front_end_answered(server, since, port, 400, "bad_request")
    log = server.stdout()
    assert f"first={marker}" in log
    assert f"/{marker}" not in log and "/smuggled" not in log


def test_malformed_chunked_body_is_refused(server: Server, worker_pid: int) -> None:
    for first in (True, False):
        with RawConnection(server) as conn:
            if not first:
                conn.send(get("/info"))
                assert conn.response().status == 200
            conn.send(
                get("/upload?mode=read&n=100", "Transfer-Encoding: chunked", method="POST")
                + b"5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n"
            )
            response = conn.response()
            assert_refused(response, 400, "bad_request")
            assert conn.closed_by_server()


@pytest.mark.parametrize(
    ("trailer", "status", "reason"),
    [
        (b"X-Trailer: ok\r\n\r\n", 200, None),
        (b"X-Big: " + b"t" * 40000 + b"\r\n\r\n", 431, "head_too_large"),
        (b"X-Endless: " + b"t" * 110000, 431, "head_too_large"),
    ],
    ids=["small", "too_large", "endless"],
)
def test_trailers_are_bounded(
    server: Server, trailer: bytes, status: int, reason: str | None
) -> None:
    """Trailer fields are dropped, but count against the head limits as they come."""
    with RawConnection(server) as conn:
        conn.send(get("/info"))
        assert conn.response().status == 200
        conn.send(get("/upload?mode=read&n=100", "Transfer-Encoding: chunked", method="POST"))
        try:
            conn.send(b"5\r\nhello\r\n0\r\n" + trailer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused already; the answer is waiting to be read
        response = conn.response()
        if reason is None:
            assert (response.status, response.json()["length"]) == (200, 5)
        else:
            assert_refused(response, status, reason)


# size limits


def headers_of(count: int, size: int = 10) -> list[str]:
    return [f"X-H{index}: {'v' * size}" for index in range(count)]


def request_line_of(length: int) -> str:
    """A target that makes `GET TARGET HTTP/1.1` exactly `length` bytes long."""
    prefix = "/info?q="
    return prefix + "a" * (length - len("GET  HTTP/1.1") - len(prefix))


LIMIT_CASES = {
    "too_many_headers": (get("/info", *headers_of(100)), 431, "too_many_headers"),
    "head_too_large": (get("/info", *headers_of(5, 8000)), 431, "head_too_large"),
    "request_line_too_long": (get(request_line_of(8191)), 414, "url_too_long"),
    "request_line_far_too_long": (get(request_line_of(40000)), 414, "url_too_long"),
}


def test_heads_at_the_limits_are_served(server: Server) -> None:
    with RawConnection(server) as conn:
        for round_ in range(2):  # the front end, then the worker
            conn.send(get(f"/info?round={round_}", *headers_of(99)))
            assert conn.response().status == 200
            conn.send(get("/info", *headers_of(3, 8000)))
            assert conn.response().status == 200
            conn.send(get(request_line_of(8190)))
            assert conn.response().status == 200


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_oversized_first_head_refused_by_the_front_end(
    server: Server, worker_pid: int, case: str
) -> None:
    data, status, reason = LIMIT_CASES[case]
    since = len(server.stderr())
    with RawConnection(server) as conn:
        conn.send(data)
        assert_refused(conn.response(), status, reason)
        assert conn.closed_by_server()
        assert front_end_answered(server, since, conn.port, status, reason)


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_oversized_second_head_refused_by_the_worker(
    server: Server, worker_pid: int, case: str
) -> None:
    data, status, reason = LIMIT_CASES[case]
    since = len(server.stderr())
    with RawConnection(server) as conn:
        conn.send(get("/info"))
        assert conn.response().status == 200
        conn.send(data)
        assert_refused(conn.response(), status, reason)
        assert conn.closed_by_server()
        assert not front_end_answered(server, since, conn.port, status, reason)


@pytest.mark.parametrize("second", [False, True], ids=["front_end", "worker"])
@pytest.mark.parametrize(
    ("partial", "status", "reason"),
    [
        (b"GET /" + b"a" * 40000, 414, "url_too_long"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 40000, 431, "head_too_large"),
    ],
    ids=["request_line", "header_value"],
)
def test_endless_head_refused_before_it_ends(
    server: Server, partial: bytes, status: int, reason: str, second: bool
) -> None:
    """A head still arriving is refused once past the limit, not buffered on.

    The front end counts exactly; a worker may see up to one read (64 KiB)
    more before it counts, so the head goes on until well past both.
    """
    with RawConnection(server) as conn:
        if second:
            conn.send(get("/info"))
            assert conn.response().status == 200
        try:
            conn.send(partial)
            conn.send(b"a" * 70000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused already; the answer is waiting to be read
        assert_refused(conn.response(), status, reason)


# timeouts


def test_slow_head_gets_408_at_the_deadline(quick_server: Server) -> None:
    with RawConnection(quick_server) as conn:
        started = time.monotonic()
        conn.send(b"GET /info HTTP/1.1\r\nHost: a\r\n")
        response = conn.response()
        elapsed = time.monotonic() - started
        assert_refused(response, 408, "head_timeout")
        assert 0.9 <= elapsed < 5.0, elapsed
        assert conn.closed_by_server()


def test_dripping_head_does_not_extend_the_deadline(quick_server: Server) -> None:
    """A byte at a time still gets 408 at the first deadline (slow loris)."""
    head = b"GET /info HTTP/1.1\r\nHost: a\r\n" + b"X-Drip: " + b"d" * 1000
    with RawConnection(quick_server) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.settimeout(0.1)
        started = time.monotonic()
        answer = b""
        for byte in head:
            if time.monotonic() - started > 5:
                break
            try:
                conn.sock.send(bytes([byte]))
                answer = conn.sock.recv(65536)  # waits 0.1 s: the drip's pace
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            break
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert elapsed < 3.0, elapsed


def test_idle_keepalive_connection_is_closed(quick_server: Server) -> None:
    with RawConnection(quick_server) as conn:
        conn.send(get("/info"))
        assert conn.response().status == 200
        idle_since = time.monotonic()
        assert conn.closed_by_server(timeout=6.0)
        assert 0.9 <= time.monotonic() - idle_since < 4.0


def test_keepalive_connection_stuck_in_a_head_gets_408(quick_server: Server) -> None:
    with RawConnection(quick_server) as conn:
        conn.send(get("/info"))
        assert conn.response().status == 200
        conn.send(b"GET /info HTTP/1.1\r\nHost: a\r\n")
        assert_refused(conn.response(), 408, "head_timeout")
        assert conn.closed_by_server()


# HEAD, closing, and the headers every response carries


@pytest.mark.parametrize(
    "path",
    [
        "/download?size=5000&cl=1",
        "/download?size=5000&chunk=1000",
        "/v/download?size=5000&chunk=1000",
        "/pid",
        "/closing?marker=/dev/null&chunks=3&size=7",
    ],
)
def test_head_has_no_body(server: Server, path: str) -> None:
    """HEAD gets GET's headers and no body; the connection stays in step."""
    with RawConnection(server) as conn:
        conn.send(get(path))
        full = conn.response()
        assert full.status == 200
        conn.send(get(path, method="HEAD"))
        head = conn.response(head_only=True)
        assert head.status == 200
        if full.header("content-length") is not None:
            assert head.header("content-length") == str(len(full.body))
        else:
            assert head.header("transfer-encoding") == full.header("transfer-encoding")
        conn.send(get("/info?after=head"))
        after = conn.response()
        assert after.json()["query"] == "after=head"


def test_connection_close_is_honoured(server: Server) -> None:
    with RawConnection(server) as conn:
        conn.send(get("/info"))
        assert conn.response().status == 200
        conn.send(get("/info", "Connection: close"))
        response = conn.response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert conn.closed_by_server()


@pytest.mark.parametrize("path", ["/info", "/download?size=3000&chunk=1000"])
def test_http10_closes_unless_keepalive_asked(server: Server, path: str) -> None:
    with RawConnection(server) as conn:
        conn.send(get(path, version="1.0"))
        response = conn.response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert response.header("transfer-encoding") is None
        assert conn.closed_by_server()
    with RawConnection(server) as conn:
        conn.send(get("/info", "Connection: keep-alive", version="1.0"))
        response = conn.response()
        assert response.status == 200
        assert response.header("connection") == "keep-alive"
        conn.send(get("/info?again=1", "Connection: keep-alive", version="1.0"))
        assert conn.response().json()["query"] == "again=1"


def assert_standard_headers(response: Response) -> None:
    assert response.header("server") == "poolwarden"
    date = response.header("date")
    assert date is not None
    sent = email.utils.parsedate_to_datetime(date)
    assert sent.tzinfo is not None
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 60


def test_date_and_server_headers(server: Server) -> None:
    with RawConnection(server) as conn:
        conn.send(get("/info"))
        assert_standard_headers(conn.response())
        conn.send(get("/download?size=100&chunk=10"))
        assert_standard_headers(conn.response())
        conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n")
        assert_standard_headers(conn.response())
    with RawConnection(server) as conn:
        conn.send(b"BAD\r\n\r\n")
        assert_standard_headers(conn.response())


def test_front_end_answers_carry_the_status_phrase(server: Server) -> None:
    status, headers, body = server.request("GET", "/info", headers={"X-H": "x" * 40000})
    assert (status, headers["x-poolwarden-reason"]) == (431, "head_too_large")
    assert body == b"Request Header Fields Too Large: request head larger than the limit\n"
    assert headers["content-length"] == str(len(body))
