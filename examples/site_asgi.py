"""The demo site's ASGI app: the same routes on the worker's event loop."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

Receive = Any
Send = Any


async def _respond(
    send: Send, body: bytes, content_type: bytes = b"text/plain", status: int = 200
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    # `path` includes the mount path (`root_path`) where the app is mounted.
    path = scope["path"][len(scope["root_path"]) :] or "/"
    if path == "/":
        root = scope["root_path"]
        text = (
            f"poolwarden demo: ASGI app in worker {os.getpid()}\n"
            f"try {root}/scope, {root}/echo, {root}/stream, {root}/slow?seconds=3\n"
        )
        await _respond(send, text.encode())
    elif path == "/scope":
        shown = {key: repr(value) for key, value in scope.items()}
        await _respond(send, json.dumps(shown, indent=2).encode(), b"application/json")
    elif path == "/echo":
        await _respond(send, await _read_body(receive))
    elif path == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for number in range(5):
            await send(
                {
                    "type": "http.response.body",
                    "body": f"chunk {number}\n".encode(),
                    "more_body": True,
                }
            )
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":
        query = dict(
            part.partition("=")[::2] for part in scope["query_string"].decode().split("&") if part
        )
        seconds = min(float(query.get("seconds", "3")), 30.0)
        await asyncio.sleep(seconds)
        await _respond(send, f"slept {seconds} s in worker {os.getpid()}\n".encode())
    else:
        await _respond(send, b"not found\n", status=404)
