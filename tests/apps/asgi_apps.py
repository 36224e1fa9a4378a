"""ASGI apps for the compliance tests; each one exercises one part of the spec.

`app` routes on the path so that one server covers many checks; the
lifespan variants are separate apps because lifespan is per app. Files the
apps write (markers) are named by environment variables the tests set, so
that parallel tests never share them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Any
Send = Any

WAIT_LIMIT = 15.0
"""Longest an app waits for anything, so a broken server cannot hang a test."""
FLOOD_CHUNK = 256 * 1024
FLOOD_CHUNKS = 96


async def respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain"
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


async def respond_json(send: Send, value: object) -> None:
    await respond(send, 200, json.dumps(value).encode(), b"application/json")


def write_marker(variable: str, text: str) -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a") as file:
            file.write(text + "\n")


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """Start-up stores state for requests; shut-down writes $ASGI_SHUTDOWN_MARKER."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["started_by"] = "lifespan"
            scope["state"]["worker_pid"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            write_marker("ASGI_SHUTDOWN_MARKER", f"shutdown {os.getpid()}")
            await send({"type": "lifespan.shutdown.complete"})
            return


def describe_scope(scope: Scope) -> dict[str, object]:
    """The scope as JSON: bytes as latin-1 text, tuples as lists."""
    return {
        "type": scope["type"],
        "asgi": scope["asgi"],
        "http_version": scope["http_version"],
        "method": scope["method"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "raw_path_type": type(scope["raw_path"]).__name__,
        "query_string": scope["query_string"].decode("latin-1"),
        "query_string_type": type(scope["query_string"]).__name__,
        "root_path": scope["root_path"],
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]
        ],
        "header_types": sorted(
            {f"{type(name).__name__},{type(value).__name__}" for name, value in scope["headers"]}
        ),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "state": scope.get("state"),
        "pid": os.getpid(),
    }


async def read_body(receive: Receive) -> tuple[bytes, list[dict[str, object]]]:
    """The whole body, and what each `http.request` message looked like."""
    chunks = []
    messages: list[dict[str, object]] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            messages.append({"type": message["type"]})
            break
        chunks.append(message["body"])
        messages.append(
            {
                "type": message["type"],
                "size": len(message["body"]),
                "more_body": message.get("more_body", False),
            }
        )
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


async def next_message_type(receive: Receive) -> str:
    try:
        message = await asyncio.wait_for(receive(), WAIT_LIMIT)
    except TimeoutError:
        return "timeout"
    return str(message["type"])


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    path = scope["path"]
    if path == "/body":
        body, messages = await read_body(receive)
        await respond_json(
            send,
            {
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "messages": len(messages),
                "more_body": [m.get("more_body") for m in messages],
                "types": sorted({str(m["type"]) for m in messages}),
            },
        )
    elif path == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        for index in range(5):
            await send(
                {"type": "http.response.body", "body": b"part %d\n" % index, "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/disconnect":
        # Read the body, then wait for the client to go away; the marker says
        # which message came next and from which receive() call.
        types = []
        while True:
            message = await receive()
            types.append(message["type"])
            if message["type"] != "http.request":
                break
            write_marker("ASGI_DISCONNECT_MARKER", f"chunk {len(message['body'])}")
            if not message.get("more_body", False):
                break
        write_marker("ASGI_DISCONNECT_MARKER", "read " + ",".join(types))
        # ?listeners=2: two tasks wait at once, as a framework's disconnect
        # watcher and the app's own code may.
        listeners = 2 if scope["query_string"] == b"listeners=2" else 1
        texts = await asyncio.gather(*(next_message_type(receive) for _ in range(listeners)))
        write_marker("ASGI_DISCONNECT_MARKER", f"received {','.join(texts)}")
        await respond(send, 200, b"too late\n")
    elif path == "/flood":
        # A large streamed download; the marker counts the chunks sent so far.
        marker = os.environ["ASGI_FLOOD_MARKER"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * FLOOD_CHUNK
        for index in range(FLOOD_CHUNKS):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            with open(marker + ".tmp", "w") as file:
                file.write(str(index + 1))
            os.replace(marker + ".tmp", marker)
        await send({"type": "http.response.body", "body": b""})
    elif path.startswith("/bad-header/"):
        # A header an attacker could have smuggled a second header into.
        name, value = (b"x-note", b"a\r\nset-cookie: evil=1")
        if path.endswith("/name"):
            name, value = (b"x-note\r\nset-cookie: evil=1", b"a")
        await send({"type": "http.response.start", "status": 200, "headers": [(name, value)]})
        await send({"type": "http.response.body", "body": b"smuggled\n"})
    elif path == "/custom":
        # The response headers the query asks for, as `hn`/`hv` pairs.
        params = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        pairs = zip(params.get("hn", []), params.get("hv", []), strict=True)
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), *headers],
            }
        )
        await send({"type": "http.response.body", "body": b"custom\n"})
    elif path == "/error":
        raise RuntimeError("the app failed on purpose")
    elif path == "/noresponse":
        return
    elif path == "/pid":
        await respond(send, 200, str(os.getpid()).encode())
    else:
        await respond_json(send, describe_scope(scope))


async def no_lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    """An app written for HTTP only: it raises on the lifespan scope."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    await respond(send, 200, b"no lifespan, still serving\n")


async def startup_failed_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reports `lifespan.startup.failed`, as an app whose database is down would."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "database is unreachable"})
        return
    await respond(send, 200, b"should never serve\n")


async def startup_raises_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises inside its lifespan start-up."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        connect_to_cache()
    await respond(send, 200, b"should never serve\n")


def connect_to_cache() -> None:
    raise ConnectionRefusedError("cache at 127.0.0.1:1 refused the connection")
