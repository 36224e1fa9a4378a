"""What the kernel counted on a connection: bytes taken from it and bytes
written to it, by every process holding it.

The master keeps its own copy of every connection it hands to a worker
(`custody`). When the worker dies, these counts tell whether it touched the
connection at all: if neither has moved since the hand-off, the worker read
nothing from the socket and wrote nothing to it, so whatever it did with
the head the master gave it, no response began and the request can go to
another worker. TCP only (`TCP_INFO`); a Unix socket has no such counts.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios

_TCP_INFO_SIZE = 136
"""Enough of `struct tcp_info` for `tcpi_bytes_acked` (offset 120) and
`tcpi_bytes_received` (offset 128), both in Linux since 4.1."""


def waiting(sock: socket.socket) -> int:
    """Bytes the client sent that nobody has read yet (SIOCINQ); 0 if unknown."""
    try:
        data = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    count: int = struct.unpack("i", data)[0]
    return count


def byte_counts(sock: socket.socket) -> tuple[int, int] | None:
    """(bytes read from the socket, bytes written to it) so far, or None
    when the kernel does not say (not TCP, an old kernel, a closed socket)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    acked, received = struct.unpack_from("QQ", info, 120)
    return received - waiting(sock), acked + unsent
