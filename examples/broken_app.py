"""The demo site's broken pool: its app cannot start, the way real apps fail.

It reads a setting at import time that the pool does not provide, so every
worker fails during start-up; `poolwarden events` says where and why.
"""

import os

DATABASE_URL = os.environ["DEMO_DATABASE_URL"]  # not set in examples/config/demo.toml


def app(environ, start_response):  # type: ignore[no-untyped-def]  # never reached
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"connected to " + DATABASE_URL.encode()]
