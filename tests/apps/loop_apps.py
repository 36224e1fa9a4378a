"""An ASGI app that blocks its event loop for as long as asked."""

from __future__ import annotations

import os
import time
from typing import Any


def hold_the_loop(seconds: float) -> None:
    """Stands for a synchronous call inside async code."""
    time.sleep(seconds)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/hold":
        hold_the_loop(float(scope["query_string"] or b"1"))
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
