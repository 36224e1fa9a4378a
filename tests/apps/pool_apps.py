"""Apps that say which pool, mount path and process answered."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """`/hold?started=F&until=G` blocks (bounded) like tests.apps.wsgi_threads;
    anything else answers who served it."""
    query = {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    if environ["PATH_INFO"].endswith("/hold"):
        Path(query["started"]).write_text(str(os.getpid()))
        deadline = time.monotonic() + 15.0
        while not os.path.exists(query["until"]) and time.monotonic() < deadline:
            time.sleep(0.005)
    body = json.dumps(
        {
            "pool": os.environ.get("POOL_LABEL", ""),
            "interface": "wsgi",
            "script_name": environ["SCRIPT_NAME"],
            "path_info": environ["PATH_INFO"],
            "host": environ.get("HTTP_HOST", ""),
            "pid": os.getpid(),
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/hold?started=F&until=G` waits (bounded, without blocking the loop)
    like the WSGI app's; anything else answers who served it."""
    if scope["type"] != "http":
        return
    if scope["path"].endswith("/hold"):
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        Path(query["started"]).write_text(str(os.getpid()))
        deadline = time.monotonic() + 15.0
        while not os.path.exists(query["until"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    body = json.dumps(
        {
            "pool": os.environ.get("POOL_LABEL", ""),
            "interface": "asgi",
            "root_path": scope["root_path"],
            "path": scope["path"],
            "pid": os.getpid(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def whoami(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps({"uid": os.getuid(), "gid": os.getgid()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def interpreter(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    import sys

    body = json.dumps({"executable": sys.executable}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
