"""PEP 3333 compliance of the WSGI worker, checked by `wsgiref.validate`.

Routes under `/v/` run inside `wsgiref.validate.validator`: a breach of the
spec raises inside the worker (a 500 and a traceback) or prints to stderr
(an iterable never closed), so every test here checks exact statuses and
bodies, and the load test also checks that the server's log stayed clean.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.apps.wsgi_apps import pattern
from tests.conftest import Server, wait_until
from tests.test_http_edge_cases import APP, RawConnection, get, launch, token

THREADS = 8
REQUESTS_PER_THREAD = 30
LOAD_DEADLINE = 60.0
LOG_PROBLEMS = re.compile(r"Traceback|AssertionError|Warning|garbage collected|Error:")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch(tmp_path_factory.mktemp("wsgi"), APP)
    yield server
    server.stop()


def log_mark(server: Server) -> int:
    """Where the server's log ends once all the workers wrote so far is in it.

    The workers' stderr reaches the master's log through a pipe, so it lands
    late; a line the app writes now marks the point where all before it is in.
    """
    marker = token()
    status, _, _ = server.get(f"/log?token={marker}")
    assert status == 200
    server.wait_for_stderr(f"log-token {marker}", timeout=10)
    return len(server.stderr())


def log_since(server: Server, offset: int) -> str:
    """What the server logged after `offset` (a `log_mark`), up to now."""
    end = log_mark(server)
    return server.stderr()[offset:end]


def assert_clean_log(text: str) -> None:
    problems = [line for line in text.splitlines() if LOG_PROBLEMS.search(line)]
    assert not problems, "\n".join(problems[:20])


def digest(data: bytes) -> dict[str, object]:
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def quote(path: Path) -> str:
    return urllib.parse.quote(str(path))


# the validated load


class Client:
    """One keep-alive http.client connection making checked requests."""

    def __init__(self, server: Server, seed: int) -> None:
        self.conn = server.http(timeout=30)
        self.random = random.Random(seed)
        self.seed = seed
        self.requests = 0
        self.sock_port: int | None = None

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        self.conn.request(method, path, body=body, headers=headers or {})  # type: ignore[arg-type]
        response = self.conn.getresponse()
        port = self.conn.sock.getsockname()[1]
        if self.sock_port is None:
            self.sock_port = port
        assert port == self.sock_port, "the connection was not kept alive"
        self.requests += 1
        return response

    def json(self, method: str, path: str, **kwargs: object) -> dict[str, object]:
        response = self.request(method, path, **kwargs)  # type: ignore[arg-type]
        body = response.read()
        assert response.status == 200, (path, response.status, body[:500])
        result = json.loads(body)
        assert isinstance(result, dict)
        return result

    def get_info(self) -> None:
        query = f"seed={self.seed}&n={self.requests}&x=%20y"
        answer = self.json("GET", f"/v/info?{query}")
        assert (answer["method"], answer["query"], answer["body"]) == ("GET", query, "")

    def post_sized(self, size: int | None = None) -> None:
        size = self.random.randrange(0, 200_000) if size is None else size
        data = self.random.randbytes(size)
        reads = self.random.choice([1000, 4096, 65536, 100_000])
        answer = self.json("POST", f"/v/upload?mode=read&n={reads}", body=data)
        assert {"length": answer["length"], "sha256": answer["sha256"]} == digest(data)

    def post_chunked(self, size: int | None = None) -> None:
        if size is None:
            step = self.random.choice([1, 999, 8192, 70_000])
            size = self.random.randrange(0, 3000 if step == 1 else 200_000)
        else:
            step = 65536
        data = self.random.randbytes(size)
        pieces = [data[start : start + step] for start in range(0, size, step)]
        mode = self.random.choice(["read", "all"])
        answer = self.json("POST", f"/v/upload?mode={mode}&n=5000", body=iter(pieces), headers={})
        assert {"length": answer["length"], "sha256": answer["sha256"]} == digest(data)

    def post_lines(self) -> None:
        lines = [
            b"line %d %s\n" % (n, b"z" * self.random.randrange(0, 3000))
            for n in range(self.random.randrange(1, 200))
        ]
        data = b"".join(lines) + b"no newline at the end"
        mode, limit = self.random.choice([("readline", 0), ("readline", 700), ("iter", 0)])
        answer = self.json("POST", f"/v/upload?mode={mode}&n={limit}", body=data)
        assert {"length": answer["length"], "sha256": answer["sha256"]} == digest(data)
        if (mode == "readline" and limit == 0) or mode == "iter":
            assert answer["reads"] == len(lines) + 1

    def download(self, size: int | None = None, chunk: int | None = None) -> None:
        size = self.random.randrange(0, 300_000) if size is None else size
        chunk = self.random.choice([100, 4096, 65536, 1 << 20]) if chunk is None else chunk
        seed = self.random.randrange(1000)
        response = self.request("GET", f"/v/download?size={size}&chunk={chunk}&seed={seed}")
        body = response.read()
        assert response.status == 200
        assert body == pattern(size, seed)
        if size > chunk:
            assert response.getheader("transfer-encoding") == "chunked"

    def head(self) -> None:
        size = self.random.randrange(0, 100_000)
        response = self.request("HEAD", f"/v/download?size={size}&cl=1&chunk=1000")
        assert response.status == 200
        assert response.getheader("content-length") == str(size)
        assert response.read() == b""

    def environ(self) -> None:
        answer = self.json("GET", "/v/environ/x", headers={"X-Seed": str(self.seed)})
        assert answer["HTTP_X_SEED"] == str(self.seed)
        assert answer["REMOTE_PORT"] == str(self.sock_port)

    def run(self, count: int) -> int:
        actions = [
            self.get_info,
            self.post_sized,
            self.post_chunked,
            self.post_lines,
            self.download,
            self.head,
            self.environ,
        ]
        try:
            # Large bodies both ways, on every thread at once.
            self.post_sized(3 * 1024 * 1024 + self.seed)
            self.post_chunked(2 * 1024 * 1024 + self.seed)
            self.download(4 * 1024 * 1024 + self.seed, chunk=16384)
            for _ in range(count):
                self.random.choice(actions)()
        finally:
            self.conn.close()
        return self.requests


def test_validated_apps_under_concurrent_keepalive_load(server: Server) -> None:
    offset = log_mark(server)
    pids = server.worker_pids()
    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [
            pool.submit(Client(server, seed).run, REQUESTS_PER_THREAD) for seed in range(THREADS)
        ]
        served = sum(future.result(timeout=LOAD_DEADLINE) for future in futures)
    assert served == THREADS * (REQUESTS_PER_THREAD + 3)
    assert time.monotonic() - started < LOAD_DEADLINE
    assert_clean_log(log_since(server, offset))
    assert server.worker_pids() == pids


# the environ


def environ_of(server: Server, request: bytes) -> tuple[dict[str, object], int]:
    with RawConnection(server) as conn:
        conn.send(request)
        response = conn.response()
        assert response.status == 200, response.body
        return response.json(), conn.port


@pytest.mark.parametrize("prefix", ["/v", ""])
def test_environ(server: Server, prefix: str) -> None:
    path = f"{prefix}/environ/a%20b/caf%C3%A9%2Fx"
    request = get(
        f"{path}?q=a%20b&r=%2F&empty=",
        "X-Dup: one",
        "X-Dup: two",
        "x-dup: three",
        "Cookie: a=1",
        "Cookie: b=2",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Length: 3",
        "User-Agent: environ-test",
        "X_Dup: smuggled",
        "X-Trailing-Dash-: kept",
        method="POST",
    )
    environ, port = environ_of(server, request + b"abc")
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == f"{prefix}/environ/a b/caf\xc3\xa9/x"
    assert environ["RAW_URI"] == f"{path}?q=a%20b&r=%2F&empty="
    assert environ["QUERY_STRING"] == "q=a%20b&r=%2F&empty="
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(server.port)
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] == str(port)
    assert environ["HTTP_HOST"] == "test"
    assert environ["HTTP_X_DUP"] == "one,two,three"  # X_Dup is dropped, not joined
    assert environ["HTTP_X_TRAILING_DASH_"] == "kept"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["HTTP_USER_AGENT"] == "environ-test"
    assert environ["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["wsgi.version"] == [1, 0]
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.input_terminated"] is True
    assert environ["has_file_wrapper"] is True


def test_environ_http10_without_query_or_body(server: Server) -> None:
    environ, _ = environ_of(server, get("/v/environ", version="1.0"))
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert environ["PATH_INFO"] == "/v/environ"
    assert environ["QUERY_STRING"] == ""
    assert environ["REQUEST_METHOD"] == "GET"
    assert "CONTENT_LENGTH" not in environ or environ["CONTENT_LENGTH"] in ("", "0")
    assert "HTTP_HOST" in environ


def test_environ_absolute_form_target(server: Server) -> None:
    environ, _ = environ_of(server, get("http://example.test/v/environ/abs?k=v"))
    assert environ["PATH_INFO"] == "/v/environ/abs"
    assert environ["QUERY_STRING"] == "k=v"


# reading the body


@pytest.mark.parametrize(
    "query",
    [
        "mode=read&n=1",
        "mode=read&n=7",
        "mode=read&n=65536",
        "mode=read&n=10000000",
        "mode=all",
        "mode=readline&n=0",
        "mode=readline&n=1",
        "mode=readline&n=50",
        "mode=readlines",
        "mode=iter",
    ],
)
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_read_every_way(server: Server, query: str, framing: str) -> None:
    lines = [b"%d %s\n" % (n, b"w" * (n * 37 % 300)) for n in range(300)]
    data = b"".join(lines) + b"tail without newline"
    if "n=1&" in query + "&" and query.startswith("mode=read"):
        data = data[:20000]  # one byte per read is slow in Python; keep it short
    with RawConnection(server) as conn:
        if framing == "length":
            conn.send(get(f"/v/upload?{query}", f"Content-Length: {len(data)}", method="POST"))
            conn.send(data)
        else:
            conn.send(get(f"/v/upload?{query}", "Transfer-Encoding: chunked", method="POST"))
            for start in range(0, len(data), 3001):
                piece = data[start : start + 3001]
                conn.send(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\nX-Trailer: yes\r\n\r\n")
        response = conn.response()
        assert response.status == 200, response.body
        answer = response.json()
        assert {"length": answer["length"], "sha256": answer["sha256"]} == digest(data)
        conn.send(get("/v/info?after=body"))
        assert conn.response().json()["query"] == "after=body"


def test_large_bodies_stream_both_ways(server: Server) -> None:
    data = random.Random(7).randbytes(6 * 1024 * 1024)
    conn = server.http(timeout=30)
    try:
        conn.request("POST", "/v/upload?mode=read&n=65536&echo=1&chunk=50000", body=data)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.read() == data
        conn.request("GET", "/v/download?size=8000000&chunk=100000&seed=3")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == pattern(8_000_000, 3)
    finally:
        conn.close()


# framing of the response


@pytest.mark.parametrize("route", ["download", "written"])
@pytest.mark.parametrize("prefix", ["/v", ""])
def test_response_without_length_is_chunked_on_http11(
    server: Server, route: str, prefix: str
) -> None:
    with RawConnection(server) as conn:
        conn.send(get(f"{prefix}/{route}?size=100000&chunk=7000&seed=5"))
        response = conn.response()
        assert response.status == 200
        assert response.header("transfer-encoding") == "chunked"
        assert response.header("content-length") is None
        assert response.body == pattern(100_000, 5)
        conn.send(get("/v/info?after=chunked"))
        assert conn.response().json()["query"] == "after=chunked"


@pytest.mark.parametrize("route", ["download", "written"])
@pytest.mark.parametrize("prefix", ["/v", ""])
def test_response_without_length_is_close_delimited_on_http10(
    server: Server, route: str, prefix: str
) -> None:
    with RawConnection(server) as conn:
        conn.send(get(f"{prefix}/{route}?size=100000&chunk=7000&seed=6", version="1.0"))
        response = conn.response()
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.header("content-length") is None
        assert response.header("connection") == "close"
        assert response.body == pattern(100_000, 6)
        assert conn.closed_by_server()


def test_response_with_length_is_not_chunked(server: Server) -> None:
    with RawConnection(server) as conn:
        conn.send(get("/v/download?size=100000&chunk=7000&cl=1&seed=8"))
        response = conn.response()
        assert response.header("content-length") == "100000"
        assert response.header("transfer-encoding") is None
        assert response.body == pattern(100_000, 8)


def test_204_has_no_body_and_keeps_the_connection(server: Server) -> None:
    with RawConnection(server) as conn:
        conn.send(get("/v/no-content"))
        response = conn.response()
        assert response.status == 204
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
        conn.send(get("/v/info?after=204"))
        assert conn.response().json()["query"] == "after=204"


def test_body_shorter_than_its_content_length_closes_the_connection(server: Server) -> None:
    """The client learns the body was cut short; the connection cannot go on."""
    with RawConnection(server) as conn:
        conn.send(get("/short"))
        response = conn.response(head_only=True)
        assert (response.status, response.header("content-length")) == (200, "100")
        conn.sock.settimeout(5)
        assert conn.reader.read() == b"only part"


# errors in the app


def test_app_exception_gives_500_and_the_worker_survives(server: Server) -> None:
    pids = server.worker_pids()
    marker = token()
    with RawConnection(server) as conn:
        conn.send(get("/info"))
        assert conn.response().status == 200
        conn.send(get(f"/boom?{marker}"))
        response = conn.response()
        assert (response.status, response.body) == (500, b"Internal Server Error\n")
        assert response.header("connection") == "close"
        assert conn.closed_by_server()
    server.wait_for_stderr(rf"Traceback[\s\S]*RuntimeError: boom {marker}", timeout=10)
    status, _, body = server.get("/pid")
    assert (status, body) == (200, str(pids[0]).encode())
    assert server.worker_pids() == pids


@pytest.mark.parametrize(
    ("kind", "raised"),
    [
        ("file", r"FileNotFoundError: \[Errno 2\] No such file or directory"),
        ("refused", r"ConnectionRefusedError: \[Errno 111\] connection to the database refused"),
        ("timeout", r"TimeoutError: the upstream timed out"),
    ],
)
def test_an_oserror_from_the_app_is_an_app_exception_not_a_disconnect(
    server: Server, kind: str, raised: str
) -> None:
    """Only the client's own socket failing is a disconnect: an OSError the
    app raises (a file, a database) is a 500 with its traceback, as any."""
    marker = token()
    with RawConnection(server) as conn:
        conn.send(get(f"/os-error?{kind}-{marker}"))
        response = conn.response()
        assert (response.status, response.body) == (500, b"Internal Server Error\n")
    server.wait_for_stderr(rf"Traceback[\s\S]*{raised}.*{marker}", timeout=10)
    server.wait_for_stdout(rf'"GET /os-error\?{kind}-{marker} HTTP/1.1" 500', timeout=10)


def test_an_oserror_from_the_app_after_the_head_is_logged(server: Server) -> None:
    marker = token()
    with RawConnection(server) as conn:
        conn.send(get(f"/os-error?mid-{marker}"))
        conn.sock.settimeout(5)
        received = conn.reader.read()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"first part" in received
    server.wait_for_stderr(rf"Traceback[\s\S]*PermissionError: .*mid-body {marker}", timeout=10)


@pytest.mark.parametrize("prefix", ["/v", ""])
def test_exception_after_start_response_gives_500(server: Server, prefix: str) -> None:
    marker = token()
    status, _, body = server.get(f"{prefix}/raise-after-start?{marker}")
    assert (status, body) == (500, b"Internal Server Error\n")
    server.wait_for_stderr(rf"RuntimeError: raised after start_response {marker}", timeout=10)


def test_start_response_with_exc_info_replaces_the_status(server: Server) -> None:
    offset = log_mark(server)
    status, headers, body = server.get("/v/exc-info")
    assert (status, body) == (503, b"the app handled it")
    assert "x-first" not in headers
    assert_clean_log(log_since(server, offset))


def test_start_response_with_exc_info_after_the_head_reraises(server: Server) -> None:
    """The head is out: the server can only cut the response short."""
    marker = token()
    with RawConnection(server) as conn:
        conn.send(get(f"/v/exc-info-late?{marker}"))
        response = conn.response(head_only=True)
        assert response.status == 200
        assert response.header("transfer-encoding") == "chunked"
        conn.sock.settimeout(5)
        assert conn.reader.read() == b"b\r\nfirst part\n\r\n"  # no last chunk
    server.wait_for_stderr(rf"ValueError: failed mid-body {marker}", timeout=10)


# what the app may and may not put in a head


@pytest.mark.parametrize(
    "query",
    [
        "status=200%20OK%0D%0AX-Injected:%201",
        "status=200%20OK%0AX-Injected:%201",
        "status=200OK",
        "status=2000%20OK",
        "status=OK",
        "hn=X-Injected&hv=a%0D%0AX-Injected:%201",
        "hn=X-Injected&hv=a%0DX-Injected:%201",
        "hn=X-Injected%0D%0AX-Other&hv=1",
        "hn=X-Injected%0DX-Other&hv=1",
        "hn=X-Injected:%20x&hv=1",
        "hn=Content-Length&hv=-5",
        "hn=Content-Length&hv=five",
    ],
)
def test_invalid_status_or_header_gives_500(server: Server, query: str) -> None:
    with RawConnection(server) as conn:
        conn.send(get(f"/custom?{query}"))
        response = conn.response()
        assert (response.status, response.body) == (500, b"Internal Server Error\n")
        assert response.header("x-injected") is None
        assert response.header("x-other") is None
        assert conn.closed_by_server()


def test_unusual_status_and_own_server_and_date(server: Server) -> None:
    date = "Mon, 01 Jan 2024 00:00:00 GMT"
    query = urllib.parse.urlencode(
        {"status": "299 Fine Anyway", "hn": ["Server", "Date", "X-A"], "hv": ["mine", date, "1"]},
        doseq=True,
    )
    with RawConnection(server) as conn:
        conn.send(get(f"/custom?{query}"))
        response = conn.response()
        assert (response.status, response.reason, response.body) == (
            299,
            "Fine Anyway",
            b"custom\n",
        )
        names = [name for name, _ in response.headers]
        assert names.count("server") == 1 and names.count("date") == 1
        assert (response.header("server"), response.header("date")) == ("mine", date)
        assert response.header("x-a") == "1"
        conn.send(get("/v/info?after=custom"))
        assert conn.response().json()["query"] == "after=custom"


# close()


def assert_closed_once(server: Server, marker: Path) -> None:
    """The app's iterable recorded one close() call in `marker`."""

    def closed() -> bool:
        return marker.exists() and marker.read_text() != ""

    wait_until(closed, timeout=15, what="close() to be called")
    # A second call would come right after the first; a request later, it is in.
    assert server.get("/v/info")[0] == 200
    assert marker.read_text() == "closed\n"


@pytest.mark.parametrize(
    ("query", "method", "status"),
    [
        ("chunks=3&size=10", "GET", 200),
        ("chunks=3&size=10", "HEAD", 200),
        ("chunks=1&size=10", "GET", 200),
        ("chunks=0&size=10", "GET", 200),
        ("chunks=5&size=10&fail_at=2", "GET", 200),  # fails mid-body
        ("chunks=5&size=10&fail_at=0", "GET", 500),  # fails before any body
    ],
)
@pytest.mark.parametrize("prefix", ["/v", ""])
def test_close_is_called(
    server: Server, tmp_path: Path, prefix: str, query: str, method: str, status: int
) -> None:
    marker = tmp_path / "closed"
    with RawConnection(server) as conn:
        conn.send(get(f"{prefix}/closing?marker={quote(marker)}&{query}", method=method))
        response = conn.response(head_only=True)
        assert response.status == status
    assert_closed_once(server, marker)


@pytest.mark.parametrize("prefix", ["/v", ""])
def test_close_is_called_when_the_client_goes_away(
    server: Server, tmp_path: Path, prefix: str
) -> None:
    marker = tmp_path / "closed"
    with RawConnection(server) as conn:
        conn.send(get(f"{prefix}/closing?marker={quote(marker)}&chunks=2000&size=65536"))
        assert conn.response(head_only=True).status == 200
    assert_closed_once(server, marker)


# wsgi.file_wrapper


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = random.Random(11).randbytes(3 * 1024 * 1024 + 12345)
    path = tmp_path_factory.mktemp("files") / "data.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize(
    ("extra", "start", "end", "sendfile"),
    [
        ("", 0, None, True),
        ("&skip=1000", 1000, None, True),
        ("&cl=5000", 0, 5000, True),
        ("&skip=10&cl=5000", 10, 5010, True),
        ("&bytesio=1", 0, None, False),
        ("&bytesio=1&skip=77", 77, None, False),
    ],
)
@pytest.mark.parametrize("prefix", ["/v", ""])
def test_file_wrapper_sends_the_file(
    server: Server,
    data_file: tuple[Path, bytes],
    prefix: str,
    extra: str,
    start: int,
    end: int | None,
    sendfile: bool,
) -> None:
    path, data = data_file
    expected = data[start:end]
    url = f"{prefix}/file?path={quote(path)}{extra}"
    with RawConnection(server) as conn:
        conn.send(get(url))
        response = conn.response()
        assert response.status == 200
        assert response.body == expected
        if sendfile and not prefix:
            # The validator hides the wrapper, so only the bare app gets sendfile.
            assert response.header("content-length") == str(len(expected))
        conn.send(get(url, method="HEAD"))
        head = conn.response(head_only=True)
        assert head.status == 200
        assert head.header("content-length") == response.header("content-length")
        conn.send(get("/v/info?after=file"))
        assert conn.response().json()["query"] == "after=file"


def test_file_wrapper_on_a_pipe_is_iterated(server: Server, tmp_path: Path) -> None:
    """A file with an fd but no size (a FIFO) is read, not sendfile'd as empty."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = b"through a pipe\n" * 1000

    def feed() -> None:
        with open(fifo, "wb") as writer:
            writer.write(data)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    status, _, body = server.get(f"/file?path={quote(fifo)}")
    feeder.join(10)
    assert (status, body) == (200, data)
