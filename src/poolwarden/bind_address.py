"""What a `--bind` value or a site's binding says: an address, not a socket.

    "127.0.0.1:8000" | "[::1]:8000" | ":8000" | "8000" | "unix:/run/pw.sock"
        │ parse_bind (pure: no sockets, no files)
        ▼
    (host, port) or ("unix", path) ──▶ config (checks every binding at load)
                                   └─▶ master.binding (opens the listener)

The parser lives below the master so that the configuration can check a
file's bindings without importing the process that serves them; opening
the socket stays in `poolwarden.master.binding`.
"""

from __future__ import annotations


class BindError(Exception):
    """A binding that could not be parsed or opened; the message says which and why."""


def parse_bind(text: str) -> tuple[str, str | int]:
    """(`unix`, path) or (host, port) for `HOST:PORT`, `[V6]:PORT`, `:PORT`, `PORT`."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise BindError(f"bind {text!r}: a unix socket needs a path")
        return "unix", path
    host, colon, port_text = text.rpartition(":")
    if not colon:
        host, port_text = "127.0.0.1", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise BindError(f"bind {text!r}: expected HOST:PORT or unix:PATH") from None
    if not 0 <= port <= 65535:
        raise BindError(f"bind {text!r}: port {port} is out of range")
    return host or "0.0.0.0", port
