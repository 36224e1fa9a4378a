"""A WSGI app for the launch-wrapper and core-dump tests: it says which
process serves it and with what core size limit, and crashes on request."""

from __future__ import annotations

import ctypes
import json
import os
import resource
from collections.abc import Callable, Iterable
from typing import Any


def crash_in_c() -> None:
    ctypes.string_at(0)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/segv":
        crash_in_c()
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    body = json.dumps(
        {"pid": os.getpid(), "ppid": os.getppid(), "core_soft": soft, "core_hard": hard}
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
