"""Parsing `--bind` values and opening the listening sockets.

Binding happens before any worker starts, so a taken port is reported at
once, with the address, and nothing is left running.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass


class BindError(Exception):
    """A binding that could not be opened; the message says which and why."""


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


def parse_bind(text: str) -> tuple[str, str | int]:
    """(`unix`, path) or (host, port) for `HOST:PORT`, `[V6]:PORT`, `:PORT`, `PORT`."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise BindError(f"bind {text!r}: a unix socket needs a path")
        return "unix", path
    host, _, port_text = text.rpartition(":")
    if not _:
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
