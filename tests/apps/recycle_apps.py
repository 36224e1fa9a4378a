"""Apps for recycling tests: say which process answered; grow on request."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

_HELD: list[bytes] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/grow":
        _HELD.append(os.urandom(1) * (40 * 1024 * 1024))  # 40 MiB, touched
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
