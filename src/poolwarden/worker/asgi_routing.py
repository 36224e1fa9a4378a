"""A later request on a keep-alive ASGI connection: served here, or handed back.

```
 HttpProtocol.on_headers_complete ──root_path_here()──▶ RoutingTable (Boot's; Routes replaces it)
     this pool's application: the scope's root_path │ None: another pool's (cycle.hand_back)
 HttpProtocol, at that request's turn ──handed_back()──▶ HandBack: the request as it came
     ──▶ ASGIServer.hand_back: HandBack(+fd) over the channel ──▶ the front end routes it again
     None: it cannot be given back whole ──▶ 421 Misdirected Request, and the connection closes
```

The front end routed the connection's first request; a later one on the
same connection may name another application of this pool (a new
`root_path`) or another pool's. The request is written out again from what
was parsed: its head, and the body bytes received so far when the body is
framed by Content-Length (the rest is still in the socket). A chunked body
still arriving cannot be given back whole. `worker.wsgi.Connection` does
the same for a WSGI worker.
"""

from __future__ import annotations

from collections.abc import Iterable

from poolwarden import channel as ch
from poolwarden.http.target import request_bytes
from poolwarden.routing import RoutingTable


def root_path_here(
    table: RoutingTable, binding: str, host: bytes | None, raw_path: bytes, pool: str
) -> str | None:
    """The `root_path` of a later request when pool `pool` serves it; None
    when it belongs elsewhere and is to be handed back."""
    match = table.route(binding, (host or b"").decode("latin-1"), raw_path.decode("latin-1"))
    if match is not None and match.application.pool == pool:
        return match.script_name
    return None


def handed_back(
    dispatch: ch.Dispatch,
    method: str,
    target: bytes,
    http_version: str,
    headers: list[tuple[bytes, bytes]],
    body: Iterable[bytes],
    *,
    complete: bool,
) -> ch.HandBack | None:
    """What gives the connection back to the front end with this request
    (the body received so far, `complete` or not); None if it cannot be
    given back whole."""
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    if chunked and not complete:
        return None
    return ch.HandBack(
        conn_id=dispatch.conn_id,
        peer_host=dispatch.peer_host,
        peer_port=dispatch.peer_port,
        binding=dispatch.binding,
        buffered=request_bytes(
            method.encode("ascii"), target, http_version, headers, b"".join(body), chunked=chunked
        ),
    )
