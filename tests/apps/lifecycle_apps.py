"""ASGI apps for the lifecycle tests: requests that block until the test says so.

`GET /block/NAME` creates `$LIFECYCLE_DIR/NAME.started`, then waits (bounded)
until the test creates `$LIFECYCLE_DIR/NAME.release`. That is how a test holds
a request in flight in the app for exactly as long as it needs to.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from pathlib import Path
from typing import Any

BLOCK_LIMIT = 20.0
"""The longest a request blocks, so a failed test cannot leave it hanging."""


def lifecycle_dir() -> Path:
    return Path(os.environ["LIFECYCLE_DIR"])


async def respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def block(name: str) -> bytes:
    directory = lifecycle_dir()
    # Written whole, then renamed: the test never sees an empty file.
    (directory / f"{name}.tmp").write_text(str(os.getpid()))
    os.replace(directory / f"{name}.tmp", directory / f"{name}.started")
    release = directory / f"{name}.release"
    deadline = time.monotonic() + BLOCK_LIMIT
    while not release.exists():
        if time.monotonic() > deadline:
            return b"gave up waiting\n"
        await asyncio.sleep(0.01)
    return b"released %s\n" % name.encode()


def crash_here_on_purpose() -> None:
    """Reads address 0: a real segmentation fault, as a broken C extension would."""
    ctypes.string_at(0)


def print_lines() -> None:
    print("first line from the app")
    print("second line from the app", flush=True)
    sys.stderr.write("an error line from the app\n")
    sys.stderr.write("partial ")
    sys.stderr.flush()
    sys.stderr.write("then the rest\n")
    sys.stderr.flush()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if path.startswith("/block/"):
        await respond(send, 200, await block(path.removeprefix("/block/")))
    elif path == "/segv":
        crash_here_on_purpose()
    elif path == "/print":
        print_lines()
        await respond(send, 200, b"printed\n")
    else:
        await respond(send, 200, str(os.getpid()).encode())
