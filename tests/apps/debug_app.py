"""An app to step through under `poolwarden debug startup`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

GREETING = "hello from the debugged worker"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"{GREETING} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
