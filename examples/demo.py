"""`make demo`: serve the demo site from its configuration file.

One server on 127.0.0.1:8000 with one site and two application pools:
`/` is the WSGI app (pool `web`, two worker processes at most) and `/api`
the ASGI app (pool `api`). Both start on their first request, as IIS pools
do. Ctrl-C stops the server gracefully.
"""

from __future__ import annotations

import os
import sys

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config", "demo.toml")

TRY = """
poolwarden demo site: http://127.0.0.1:8000/  (examples/config/demo.toml)
  /       pool "web": examples/site_wsgi.py (WSGI, up to 2 worker processes)
  /api/   pool "api": examples/site_asgi.py (ASGI, mounted at /api)
  /broken/ pool "broken": examples/broken_app.py, which cannot start

Try, in another terminal:
  curl http://127.0.0.1:8000/env
  curl -d 'hello' http://127.0.0.1:8000/echo
  curl -N http://127.0.0.1:8000/stream
  curl http://127.0.0.1:8000/api/scope
  curl 'http://127.0.0.1:8000/slow?seconds=20' &  .venv/bin/poolwarden requests
  .venv/bin/poolwarden pools
  .venv/bin/poolwarden wp
  .venv/bin/poolwarden pool recycle web
  .venv/bin/poolwarden pool stop api; curl -i http://127.0.0.1:8000/api/   (503 pool_stopped)
  .venv/bin/poolwarden pool start api
  curl -i -H 'Transfer-Encoding: chunked' -H 'Content-Length: 1' -d x http://127.0.0.1:8000/
      (a request-smuggling shape: the front end answers 400 itself)
  cat .poolwarden/frontend.log   (every request the front end answered itself)
  curl -i http://127.0.0.1:8000/crash     (the worker segfaults: a 502 naming its event)
  curl -i http://127.0.0.1:8000/broken/   (503 startup_failed, naming its event)
  .venv/bin/poolwarden events             (why: every worker start and death)
  .venv/bin/poolwarden events show SEQ    (one event, with its traceback or crash dump)
  .venv/bin/poolwarden stack web          (every thread's stack, the request each serves)
  .venv/bin/poolwarden debug startup broken --start; .venv/bin/poolwarden debug connect broken
      (the next worker of "broken" waits in pdb before it imports the app;
       docs/troubleshooting.md walks through it)

Ctrl-C stops the server (it finishes the requests in flight first).
"""


def main() -> None:
    print(TRY, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "poolwarden", "serve", "-c", CONFIG])


if __name__ == "__main__":
    main()
