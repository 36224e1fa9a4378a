"""WSGI apps that block until the test lets them go, to show thread hand-over."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

DEADLINE = 15.0


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """`/hold?started=F&until=G`: touch F, then wait (bounded) for G to exist.
    `/touch?path=G`: create G."""
    query = {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    if environ["PATH_INFO"] == "/touch":
        Path(query["path"]).touch()
        body = b"touched"
    else:
        Path(query["started"]).touch()
        deadline = time.monotonic() + DEADLINE
        while not os.path.exists(query["until"]) and time.monotonic() < deadline:
            time.sleep(0.005)
        body = b"released" if os.path.exists(query["until"]) else b"gave up"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
