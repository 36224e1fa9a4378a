"""Apps whose requests take long in known places: request time-outs, stacks."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_FOREVER = threading.Event()


def wait_for_the_database(seconds: float) -> None:
    """Stands for a call to a service that does not answer."""
    _FOREVER.wait(seconds)


def spin_in_c_holding_the_gil() -> None:
    """A catastrophic backtracking match: minutes of C code that never
    releases the GIL."""
    re.match(r"(a+)+$", "a" * 40 + "b")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/stuck":
        wait_for_the_database(60.0)
    elif path == "/spin":
        spin_in_c_holding_the_gil()
    elif path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or "0.5"))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def wait_for_the_queue() -> None:
    await asyncio.sleep(60)


async def block_the_loop() -> None:
    time.sleep(1.5)


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stuck":
        await wait_for_the_queue()
    elif scope["path"] == "/block":
        await block_the_loop()
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
