"""The quickest end-to-end check: a WSGI and an ASGI app answer over loopback."""

from tests.conftest import ServerFactory


def test_wsgi_hello(start_server: ServerFactory) -> None:
    server = start_server("examples.hello:app")
    status, headers, body = server.get("/")
    assert status == 200
    assert body == b"Hello, world!\n"
    assert headers["server"] == "poolwarden"
    assert "date" in headers


def test_asgi_hello(start_server: ServerFactory) -> None:
    server = start_server("examples.hello_asgi:app")
    status, headers, body = server.get("/")
    assert (status, body) == (200, b"Hello, ASGI world!\n")
    assert headers["content-length"] == str(len(body))
