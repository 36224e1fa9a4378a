"""Answering a connection from the master and closing it politely.

After the answer the master shuts its side for writing and reads what the
client still sends until it closes or a short timer runs out ("lingering
close", as nginx does): closing at once with unread input makes the kernel
send a reset, which can destroy the answer before the client reads it.
"""

from __future__ import annotations

import asyncio
import socket

LINGER_SECONDS = 2.0


def answer_and_close(loop: asyncio.AbstractEventLoop, sock: socket.socket, response: bytes) -> None:
    try:
        sock.send(response)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        sock.close()
        return
    fd = sock.fileno()

    def finish() -> None:
        loop.remove_reader(fd)
        timer.cancel()
        sock.close()

    def drain() -> None:
        try:
            if sock.recv(65536):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        finish()

    timer = loop.call_later(LINGER_SECONDS, finish)
    loop.add_reader(fd, drain)
