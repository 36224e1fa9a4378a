"""Telling a WebSocket opening handshake from other requests (RFC 6455 §4.2.1).

Both workers ask this of a request whose head llhttp ended with an upgrade:
the ASGI worker hands such a connection to a WebSocket session, the WSGI
worker refuses it (WSGI has no way to speak WebSocket). Anything else that
asks for an upgrade (`h2c`, a POST with `Upgrade: websocket`) is served as
the plain HTTP request it also is, which RFC 9110 §7.8 allows.

Pure: header lists in, answers out.
"""

from __future__ import annotations

from collections.abc import Iterable

from poolwarden.http.responses import simple_response

Headers = Iterable[tuple[bytes, bytes]]


def _tokens(headers: Headers, name: bytes) -> list[bytes]:
    """The comma-separated values of every `name` field, lower-cased and stripped."""
    found: list[bytes] = []
    for field, value in headers:
        if field.lower() == name:
            found.extend(token.strip().lower() for token in value.split(b","))
    return [token for token in found if token]


def is_websocket_upgrade(method: bytes | str, http_version: str, headers: Headers) -> bool:
    """An HTTP/1.1 GET with `Upgrade: websocket` and `Connection: upgrade`.

    Whether the rest of the handshake is valid (the key, the version) is
    the WebSocket library's to judge: it answers a bad one with its own
    400 or 426, which is what RFC 6455 §4.2.2 asks for.
    """
    if method not in (b"GET", "GET") or http_version != "1.1":
        return False
    headers = list(headers)
    return b"websocket" in _tokens(headers, b"upgrade") and b"upgrade" in _tokens(
        headers, b"connection"
    )


def requested_subprotocols(headers: Headers) -> list[str]:
    """The subprotocols a client offers (`Sec-WebSocket-Protocol`), in its order."""
    offered: list[str] = []
    for field, value in headers:
        if field.lower() == b"sec-websocket-protocol":
            offered.extend(
                token.strip().decode("latin-1") for token in value.split(b",") if token.strip()
            )
    return offered


def websocket_on_wsgi(pool: str, head_only: bool = False) -> bytes:
    """The answer of a WSGI pool to a WebSocket handshake: RFC 6455 §4.2.2
    lets a server refuse one with an HTTP error, and the reason names why."""
    return simple_response(
        400,
        f"Bad Request: pool {pool!r} serves a WSGI app, and WebSockets need an ASGI app "
        "(WSGI has no way to hold a connection open for messages).\n",
        reason_code="websocket_on_wsgi",
        head_only=head_only,
    )
