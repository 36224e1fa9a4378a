"""A WSGI app whose routes end its worker in every way a worker can end."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


class Fatal(BaseException):
    """Not an Exception: it escapes the request path into the runtime."""


def crash_in_c() -> None:
    ctypes.string_at(0)


def fail_in_thread() -> None:
    raise ValueError("boom in a thread the app started")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/exit":
        print("about to leave with os._exit", file=sys.stderr, flush=True)
        os._exit(int(query.get("code", "7")))
    if path == "/segv":
        crash_in_c()
    if path == "/close-channel":
        os.close(int(sys.argv[1]))  # the worker's channel to the master
        time.sleep(30)  # alive, but out of touch: the master must end it
    if path == "/thread":
        thread = threading.Thread(target=fail_in_thread, name="app-side-thread")
        thread.start()
        thread.join()
    if path == "/fatal":
        raise Fatal("the app raised a BaseException")
    if path == "/allocate":
        # Touch every page, so the memory is really charged to the worker.
        hoard = [bytearray(1 << 20) for _ in range(int(query.get("mib", "1024")))]
        del hoard
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def stuck_here() -> None:
    """A request that never ends by itself (bounded, for the tests' sake)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)


def hanging(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/hang":
        stuck_here()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
