"""The hello-world apps that every server under test serves.

Both apps return the same 13-byte body with the same two headers, so that the figures
compare servers rather than apps. They are deliberately minimal: no framework, no
allocation beyond what the protocol needs, so the server's own overhead dominates.
"""

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
_ASGI_HEADERS = [(name.lower().encode(), value.encode()) for name, value in HEADERS]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI hello world."""
    start_response("200 OK", HEADERS)
    return [BODY]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI hello world; also answers the lifespan protocol so no server logs a warning."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _ASGI_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown; there is nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
