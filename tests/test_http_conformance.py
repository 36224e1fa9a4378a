"""RFC 9110 / RFC 9112 where llhttp alone would get them wrong, against real servers.

Every rule is checked on a WSGI and an ASGI pool, and on a connection's first
request (parsed by the front end, then again by the worker it is handed to)
and on a later keep-alive request (parsed by the worker alone), because each
of them must apply the same rules. The apps report what they saw: the WSGI
app its environ (`/environ`), the ASGI app its scope (`/scope`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import Server, wait_until
from tests.test_http_edge_cases import (
    RawConnection,
    Response,
    assert_refused,
    front_end_answered,
    get,
    launch,
    served_by_a_worker_barrier,
    token,
)


@dataclass
class App:
    """A running server and how its app reports what it saw."""

    interface: str
    server: Server

    @property
    def seen_path(self) -> str:
        return "/environ" if self.interface == "wsgi" else "/scope"

    @property
    def body_path(self) -> str:
        return "/upload?mode=all" if self.interface == "wsgi" else "/body"

    def seen(self, response: Response) -> dict[str, object]:
        """What the app saw of a request: method, query, version, headers."""
        assert response.status == 200, response.body
        data = response.json()
        if self.interface == "wsgi":
            headers = {
                key[5:].lower().replace("_", "-"): value
                for key, value in data.items()
                if key.startswith("HTTP_")
            }
            protocol = str(data["SERVER_PROTOCOL"])
            return {
                "method": data["REQUEST_METHOD"],
                "path": data["PATH_INFO"],
                "query": data["QUERY_STRING"],
                "version": protocol.removeprefix("HTTP/"),
                "headers": headers,
            }
        pairs = data["headers"]
        assert isinstance(pairs, list)
        return {
            "method": data["method"],
            "path": data["path"],
            "query": data["query_string"],
            "version": data["http_version"],
            "headers": {name: value for name, value in pairs},
        }

    def body_read(self, response: Response) -> tuple[object, object]:
        """(length, sha256) of the body the app read."""
        assert response.status == 200, response.body
        data = response.json()
        return data["length" if self.interface == "wsgi" else "size"], data["sha256"]


@pytest.fixture(scope="module")
def wsgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch(tmp_path_factory.mktemp("conformance-wsgi"), "tests.apps.wsgi_apps:app")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def asgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch(tmp_path_factory.mktemp("conformance-asgi"), "tests.apps.asgi_apps:app")
    yield server
    server.stop()


@pytest.fixture(params=["wsgi", "asgi"])
def app(request: pytest.FixtureRequest) -> App:
    return App(request.param, request.getfixturevalue(f"{request.param}_server"))


@pytest.fixture(params=["first", "later"])
def later(request: pytest.FixtureRequest) -> bool:
    """Whether the request under test follows another on its connection."""
    return bool(request.param == "later")


def connection(app: App, later: bool) -> RawConnection:
    """A connection to `app`, with one request served on it already if `later`."""
    conn = RawConnection(app.server)
    if later:
        conn.send(get("/pid"))
        assert conn.response().status == 200
    return conn


def exchange(app: App, later: bool, request: bytes) -> Response:
    with connection(app, later) as conn:
        conn.send(request)
        return conn.response()


def assert_refused_by(
    app: App, later: bool, request: bytes, status: int, reason: str, marker: str
) -> Response:
    """`request` is refused with `status`, by the front end when first, and the
    app never sees it (`marker` is in its target)."""
    since = len(app.server.stderr())
    with connection(app, later) as conn:
        conn.send(request)
        response = conn.response()
        assert_refused(response, status, reason)
        assert conn.closed_by_server()
        port = conn.port
    assert front_end_answered(app.server, since, port, status, reason) is not later
    served_by_a_worker_barrier(app.server)
    assert marker not in app.server.stdout()
    return response


# RFC 9112 §5.1, RFC 9110 §5.5: field values lose their surrounding whitespace


def test_whitespace_around_a_field_value_is_stripped(app: App, later: bool) -> None:
    seen = app.seen(
        exchange(
            app,
            later,
            get(app.seen_path, "X-A: value \t ", "X-B:\t \tinner  space\t", "X-C: \t"),
        )
    )
    assert seen["headers"]["x-a"] == "value"  # type: ignore[index]
    assert seen["headers"]["x-b"] == "inner  space"  # type: ignore[index]
    assert seen["headers"]["x-c"] == ""  # type: ignore[index]


# RFC 9112 §7.1.1: whitespace around a chunk extension's ";" and "="


CHUNKED_BODY = (
    b"5; some; parameters=stuff\r\nhello\r\n"
    b'6 ;name = "quoted ; value"\t; other\r\n world\r\n'
    b"0 ; last\r\n\r\n"
)


def test_chunk_extensions_with_whitespace_are_ignored(app: App, later: bool) -> None:
    request = get(app.body_path, "Transfer-Encoding: chunked", method="POST") + CHUNKED_BODY
    with connection(app, later) as conn:
        conn.send(request)
        assert app.body_read(conn.response()) == (11, hashlib.sha256(b"hello world").hexdigest())
        conn.send(get("/pid"))  # the connection is still in step
        assert conn.response().status == 200


def test_a_malformed_chunk_extension_is_refused(app: App, later: bool) -> None:
    request = get(app.body_path, "Transfer-Encoding: chunked", method="POST")
    with connection(app, later) as conn:
        conn.send(request + b"5; bad name\r\nhello\r\n0\r\n\r\n")
        assert_refused(conn.response(), 400, "bad_request")
        assert conn.closed_by_server()


# RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing


def test_transfer_encoding_in_http10_is_refused(app: App, later: bool) -> None:
    marker = f"te10-{token()}"
    request = get(f"/{marker}", "Transfer-Encoding: chunked", method="POST", version="1.0")
    response = assert_refused_by(
        app, later, request + b"5\r\nhello\r\n0\r\n\r\n", 400, "bad_request", marker
    )
    assert b"HTTP/1.0" in response.body


# RFC 9112 §3.2: a fragment is not part of the request target


def test_a_fragment_in_the_target_is_refused(app: App, later: bool) -> None:
    marker = f"fragment-{token()}"
    response = assert_refused_by(
        app, later, get(f"/{marker}?page=1#posts"), 400, "bad_request", marker
    )
    assert b"fragment" in response.body


# RFC 9110 §6.2, §15.6.6: the major version must be 1


@pytest.mark.parametrize("version", ["2.0", "3.0", "9.1", "0.9"])
def test_other_major_versions_get_505(app: App, later: bool, version: str) -> None:
    marker = f"version-{token()}"
    response = assert_refused_by(
        app, later, get(f"/{marker}", version=version), 505, "version_not_supported", marker
    )
    assert response.reason == "HTTP Version Not Supported"


def test_an_http2_preface_gets_505(app: App, later: bool) -> None:
    with connection(app, later) as conn:
        conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert_refused(conn.response(), 505, "version_not_supported")
        assert conn.closed_by_server()


def test_a_higher_minor_version_is_served_as_http11(app: App, later: bool) -> None:
    with connection(app, later) as conn:
        conn.send(get(app.seen_path, version="1.2"))
        assert app.seen(conn.response())["version"] == "1.1"
        conn.send(get("/pid"))  # kept alive, as HTTP/1.1 is
        assert conn.response().status == 200


# RFC 9110 §9.1: any method that is a token is the app's to implement


@pytest.mark.parametrize("method", ["FOO", "brew", "DESCRIBE", "PRI"])
def test_extension_methods_reach_the_app(app: App, later: bool, method: str) -> None:
    seen = app.seen(exchange(app, later, get(f"{app.seen_path}?q=1", method=method)))
    assert (seen["method"], seen["query"]) == (method, "q=1")


def test_an_extension_method_with_a_body(app: App, later: bool) -> None:
    with connection(app, later) as conn:
        conn.send(get(app.body_path, "Content-Length: 5", method="BREW") + b"hello")
        assert app.body_read(conn.response()) == (5, hashlib.sha256(b"hello").hexdigest())
        conn.send(get(f"{app.seen_path}?after=brew", method="BREW"))
        seen = app.seen(conn.response())
        assert (seen["method"], seen["query"]) == ("BREW", "after=brew")


def test_connect_is_not_implemented(app: App, later: bool) -> None:
    with connection(app, later) as conn:
        conn.send(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
        response = conn.response()
        assert_refused(response, 501, "not_implemented")
        assert b"not a proxy" in response.body
        assert conn.closed_by_server()


# the response side: names must be tokens; the app's Server and Date win


def test_a_response_field_name_that_is_not_a_token_is_a_500(app: App, later: bool) -> None:
    since = len(app.server.stderr())
    with connection(app, later) as conn:
        conn.send(get("/custom?hn=X%20A&hv=1&hn=X-B&hv=2"))
        response = conn.response()
        assert (response.status, response.body) == (500, b"Internal Server Error\n")
        assert response.header("x a") is None and response.header("x-b") is None
        assert conn.closed_by_server()
    # The server is shared: wait for this request's own lines, after `since`.
    wait_until(
        lambda: re.search(
            r"error in the app serving GET /custom[\s\S]*invalid response header (name )?b?'X A'",
            app.server.stderr()[since:],
        ),
        what="the app's error and its reason in the log",
    )


def test_the_apps_server_and_date_replace_the_servers(app: App, later: bool) -> None:
    date = "Mon, 01 Jan 2024 00:00:00 GMT"
    with connection(app, later) as conn:
        conn.send(get(f"/custom?hn=Server&hv=mine&hn=Date&hv={date.replace(' ', '%20')}"))
        response = conn.response()
        assert response.status == 200
        names = [name for name, _ in response.headers]
        assert names.count("server") == 1 and names.count("date") == 1
        assert (response.header("server"), response.header("date")) == ("mine", date)
