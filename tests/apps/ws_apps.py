"""ASGI apps for the WebSocket tests; `app` routes on the path, so one
server covers many checks. What an app saw that the client cannot see (the
disconnect it received, a send that raised) is kept in `SEEN` and served
over HTTP at `/seen`, since a worker is one process.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

Scope = dict[str, Any]
Receive = Any
Send = Any

WAIT_LIMIT = 15.0
"""Longest an app waits for anything, so a broken server cannot hang a test."""

SEEN: dict[str, Any] = {}


async def receive_within(receive: Receive) -> dict[str, Any]:
    message: dict[str, Any] = await asyncio.wait_for(receive(), WAIT_LIMIT)
    return message


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo every message as it came (text as text, bytes as bytes) until
    the client closes; the disconnect is kept under `disconnect QUERY`."""
    assert (await receive_within(receive))["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive_within(receive)
        if message["type"] == "websocket.disconnect":
            SEEN[f"disconnect {scope['query_string'].decode()}"] = message
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def report_scope(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then send the scope as JSON (bytes as latin-1 text)."""
    await receive_within(receive)
    await send({"type": "websocket.accept"})
    shown = {
        key: value
        for key, value in scope.items()
        if key not in ("state", "headers", "raw_path", "query_string")
    }
    shown["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
    shown["raw_path"] = scope["raw_path"].decode("latin-1")
    shown["query_string"] = scope["query_string"].decode("latin-1")
    shown["state_keys"] = sorted(scope.get("state", {}))
    shown["pid"] = os.getpid()
    await send({"type": "websocket.send", "text": json.dumps(shown)})
    await receive_within(receive)


async def subprotocol(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept with the last subprotocol the client offers and extra headers."""
    await receive_within(receive)
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": scope["subprotocols"][-1],
            "headers": [(b"x-session", b"abc123"), (b"set-cookie", b"s=1")],
        }
    )
    await receive_within(receive)


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    await receive_within(receive)
    await send({"type": "websocket.close", "code": 1000})
    try:
        await send({"type": "websocket.send", "text": "too late"})
    except OSError as error:
        SEEN["send_after_refusal"] = type(error).__name__


async def deny(scope: Scope, receive: Receive, send: Send) -> None:
    """The denial extension: an HTTP response of the app's own, in two parts."""
    await receive_within(receive)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": b"log in ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"first"})


async def raise_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive_within(receive)
    raise RuntimeError("broken before accept")


async def raise_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive_within(receive)
    await send({"type": "websocket.accept"})
    await receive_within(receive)
    raise RuntimeError("broken after accept")


async def return_without_close(scope: Scope, receive: Receive, send: Send) -> None:
    await receive_within(receive)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "bye"})


async def close_then_send(scope: Scope, receive: Receive, send: Send) -> None:
    """Close with 4001, then read what comes after the close handshake and
    try to send (which must raise)."""
    await receive_within(receive)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4001, "reason": "done"})
    after = await receive_within(receive)
    again = await receive_within(receive)
    try:
        await send({"type": "websocket.send", "text": "after close"})
        raised = ""
    except OSError as error:
        raised = type(error).__name__
    SEEN["after_close"] = {"receive": after, "again": again, "send_raised": raised}


async def pid(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, say the worker's pid, then echo until the end."""
    await receive_within(receive)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": str(os.getpid())})
    while True:
        message = await receive()  # no limit: a drain's 1001 ends it
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})


async def slow_reader(scope: Scope, receive: Receive, send: Send) -> None:
    """Read nothing for a while (the server must stop reading the socket,
    not buffer without bound), then count what came, in order."""
    await receive_within(receive)
    await send({"type": "websocket.accept"})
    await asyncio.sleep(1.0)
    count = total = 0
    while True:
        message = await receive_within(receive)
        if message["type"] == "websocket.disconnect":
            return
        data = message["bytes"]
        assert data[:4] == count.to_bytes(4, "big"), "out of order"
        count += 1
        total += len(data)
        if data[4:5] == b"!":
            await send({"type": "websocket.send", "text": f"{count} {total}"})


ROUTES = {
    "/echo": echo,
    "/ws/echo": echo,
    "/scope": report_scope,
    "/ws/scope": report_scope,
    "/subprotocol": subprotocol,
    "/refuse": refuse,
    "/deny": deny,
    "/raise-before": raise_before_accept,
    "/raise-after": raise_after_accept,
    "/return": return_without_close,
    "/close-then-send": close_then_send,
    "/pid": pid,
    "/slow": slow_reader,
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        scope["state"]["started"] = True
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        handler = ROUTES.get(scope["path"])
        if handler is None:
            await receive_within(receive)
            await send({"type": "websocket.close", "code": 1000})
            return
        await handler(scope, receive, send)
        return
    assert scope["type"] == "http"
    if scope["path"].endswith("/seen"):
        body = json.dumps(SEEN).encode()
    else:
        body = f"http {os.getpid()}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app: a WebSocket handshake must never reach it."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {os.getpid()} {environ.get('HTTP_UPGRADE', '')}".encode()]


def starlette_app() -> Any:
    """A real framework's WebSocket route (a factory, so that WSGI and plain
    ASGI tests do not import Starlette)."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="chat")
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"{websocket.path_params['room']}: {text}")
        except WebSocketDisconnect as disconnect:
            SEEN["starlette_disconnect"] = disconnect.code

    return Starlette(routes=[WebSocketRoute("/rooms/{room}", chat)])
