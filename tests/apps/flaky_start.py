"""An app whose import fails the first FLAKY_FAILS times, as one whose config
service or database is not up yet when the container starts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_counter = Path(os.environ["FLAKY_START_COUNTER"])
ATTEMPT = int(_counter.read_text()) + 1 if _counter.exists() else 1
_counter.write_text(str(ATTEMPT))
FAILS = int(os.environ.get("FLAKY_FAILS", "2"))
if ATTEMPT <= FAILS:
    raise ConnectionRefusedError(111, "the config service is not up yet")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"started on attempt {ATTEMPT}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
