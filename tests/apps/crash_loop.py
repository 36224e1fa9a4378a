"""An app that fails at import until the file named by $CRASH_LOOP_FIXED exists
(a broken deploy, then its fix)."""

import os
from collections.abc import Callable, Iterable
from typing import Any

if not os.path.exists(os.environ["CRASH_LOOP_FIXED"]):
    raise RuntimeError("the database is not reachable at import time")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"fixed"]
