"""`make demo`: serve the demo site, a WSGI app and an ASGI app.

Each app runs in its own poolwarden server (one pool each) on loopback.
Ctrl-C stops both gracefully.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

SERVERS = [
    ("WSGI", "examples.site_wsgi:app", os.environ.get("DEMO_WSGI_BIND", "127.0.0.1:8000")),
    ("ASGI", "examples.site_asgi:app", os.environ.get("DEMO_ASGI_BIND", "127.0.0.1:8001")),
]

TRY = """
poolwarden demo site
  WSGI app  http://{wsgi}/      (examples/site_wsgi.py, 2 worker processes)
  ASGI app  http://{asgi}/      (examples/site_asgi.py, 1 worker process)

Try:
  curl http://{wsgi}/env
  curl -d 'hello' http://{wsgi}/echo
  curl -N http://{wsgi}/stream
  curl http://{asgi}/scope
  curl 'http://{asgi}/slow?seconds=2'
  curl -i -H 'Transfer-Encoding: chunked' -H 'Content-Length: 1' -d x http://{wsgi}/
      (a request-smuggling shape: the front end answers 400 itself)

Ctrl-C stops the servers (they finish the requests in flight first).
"""


def main() -> int:
    processes = []
    for index, (_label, app, bind) in enumerate(SERVERS):
        command = [
            sys.executable, "-m", "poolwarden", "run", app,
            "--bind", bind,
            "--state-dir", f".poolwarden/demo-{index}",
            "--processes", "2" if index == 0 else "1",
        ]  # fmt: skip
        processes.append(subprocess.Popen(command))
    print(
        TRY.format(
            wsgi=SERVERS[0][2], asgi=SERVERS[1][2], wsgi_port=SERVERS[0][2].rsplit(":", 1)[1]
        )
    )
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return max(process.wait() for process in processes)


if __name__ == "__main__":
    sys.exit(main())
