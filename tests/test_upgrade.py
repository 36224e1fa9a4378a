"""Which requests are WebSocket handshakes (`poolwarden.http.upgrade`)."""

from __future__ import annotations

import pytest

from poolwarden.http.upgrade import (
    is_websocket_upgrade,
    requested_subprotocols,
    websocket_on_wsgi,
)

HANDSHAKE = [(b"Host", b"x"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]


@pytest.mark.parametrize(
    ("method", "version", "headers", "expected"),
    [
        (b"GET", "1.1", HANDSHAKE, True),
        ("GET", "1.1", [(b"upgrade", b"WebSocket"), (b"connection", b"keep-alive, Upgrade")], True),
        (b"GET", "1.1", [(b"Upgrade", b"h2c, websocket"), (b"Connection", b"upgrade")], True),
        (b"POST", "1.1", HANDSHAKE, False),
        (b"GET", "1.0", HANDSHAKE, False),
        (b"GET", "1.1", [(b"Upgrade", b"h2c"), (b"Connection", b"Upgrade")], False),
        (b"GET", "1.1", [(b"Upgrade", b"websocket"), (b"Connection", b"keep-alive")], False),
        (b"GET", "1.1", [(b"Connection", b"Upgrade")], False),
    ],
)
def test_is_websocket_upgrade(
    method: bytes | str, version: str, headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert is_websocket_upgrade(method, version, headers) is expected


def test_subprotocols_keep_the_clients_order_across_fields() -> None:
    headers = [(b"Sec-WebSocket-Protocol", b"chat.v2, chat.v1"), (b"sec-websocket-protocol", b"x")]
    assert requested_subprotocols(headers) == ["chat.v2", "chat.v1", "x"]
    assert requested_subprotocols(HANDSHAKE) == []


def test_the_wsgi_refusal_names_the_pool_and_the_reason() -> None:
    answer = websocket_on_wsgi("legacy")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nx-poolwarden-reason: websocket_on_wsgi\r\n" in answer
    assert b"connection: close\r\n" in answer
    assert b"pool 'legacy' serves a WSGI app" in answer
