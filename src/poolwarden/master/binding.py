"""Opening the listening sockets of the `--bind` values and site bindings.

Binding happens before any worker starts, so a taken port is reported at
once, with the address, and nothing is left running. What a value means is
`poolwarden.bind_address.parse_bind`'s to say (the configuration checks it
with no master around); a value that does not parse, or a socket that
cannot be opened, is a `BindError` either way.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass

# One error for a value that does not parse and a socket that cannot be opened:
# the master catches both as `poolwarden.master.binding.BindError`.
from poolwarden.bind_address import BindError as BindError
from poolwarden.bind_address import parse_bind


@dataclass(frozen=True, slots=True)
class Listener:
    sock: socket.socket
    text: str
    host: str
    port: int
    unix_path: str | None = None

    @property
    def wildcard(self) -> bool:
        """Bound to every address, so a connection's own address must be asked.

        A unix listener is never one: its host is "" too, but `getsockname()`
        of its connections is a path, not a (host, port) pair.
        """
        return self.unix_path is None and self.host in ("0.0.0.0", "::", "")

    @property
    def url(self) -> str:
        if self.unix_path:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def open_listener(text: str, backlog: int) -> Listener:
    host, target = parse_bind(text)
    try:
        if host == "unix":
            assert isinstance(target, str)
            return _open_unix(text, target, backlog)
        assert isinstance(target, int)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Accepted sockets inherit it: responses are written whole, so
            # Nagle's algorithm could only add delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, target))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    except OSError as error:
        raise BindError(f"cannot listen on {text}: {error.strerror or error}") from None
    sock.setblocking(False)
    bound_host, bound_port = sock.getsockname()[:2]
    return Listener(sock=sock, text=text, host=bound_host, port=bound_port)


def _open_unix(text: str, path: str, backlog: int) -> Listener:
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise BindError(f"cannot listen on {text}: {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a stale socket from a server that is gone
        else:
            raise BindError(f"cannot listen on {text}: another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    sock.setblocking(False)
    return Listener(sock=sock, text=text, host="", port=0, unix_path=path)


def close_listener(listener: Listener) -> None:
    listener.sock.close()
    if listener.unix_path:
        try:
            os.unlink(listener.unix_path)
        except OSError:
            pass
