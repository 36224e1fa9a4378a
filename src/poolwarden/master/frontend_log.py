"""The front-end log: one line for every request the front end answered itself.

IIS keeps these in its HTTPERR log, apart from the sites' own logs: requests
refused for their form (400, 408, 414, 431), for which no application exists
(404), or for the state of their pool (503 with a reason), and the answers
of the health path (`server.health_path`). A line is
space-separated fields, `-` where a field is unknown:

    2026-11-25 21:40:00 127.0.0.1 51234 main example.test GET /api/x 503 queue_full api

date, time (UTC), client address and port, site, host, method, path, status,
reason, pool. The file rotates by size, keeping a few old ones.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time

from poolwarden import channel as ch
from poolwarden.http.head import HeadError, find_head_end, parse_head
from poolwarden.http.limits import HeadLimits

FIELDS = "date time c-ip c-port site host method path status reason pool"


class FrontEndLog:
    """Writes the front-end log; `None` handler means the log is off."""

    def __init__(self, path: str | None, max_bytes: int, backups: int) -> None:
        self._logger = logging.getLogger(f"poolwarden.frontend_log.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        self.path = path
        if path is not None:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            new_file = not os.path.exists(path) or os.path.getsize(path) == 0
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)
            self._handler = handler
            if new_file:
                self._logger.info("#Fields: %s", FIELDS)

    def write(
        self,
        *,
        client: tuple[str, int],
        site: str,
        host: str,
        method: str,
        path: str,
        status: int,
        reason: str,
        pool: str,
    ) -> None:
        if self._handler is None:
            return
        now = time.gmtime()
        fields = [
            time.strftime("%Y-%m-%d", now),
            time.strftime("%H:%M:%S", now),
            client[0] or "-",
            str(client[1]) if client[1] else "-",
            site,
            host,
            method,
            path,
            str(status),
            reason,
            pool,
        ]
        self._logger.info(" ".join(_field(value) for value in fields))

    def write_refused(self, message: ch.Dispatch, status: int, reason: str, pool: str) -> None:
        """A dispatched request a pool refused: its head is in `buffered`."""
        if self._handler is None:
            return
        method = host = path = ""
        buffered = message.buffered
        try:
            head = parse_head(buffered, find_head_end(buffered), HeadLimits())
        except (HeadError, ValueError):
            pass
        else:
            method, host, path = head.method, head.host, head.path.decode("latin-1")
        self.write(
            client=(message.peer_host, message.peer_port),
            site=message.site,
            host=host,
            method=method,
            path=path,
            status=status,
            reason=reason,
            pool=pool,
        )

    def close(self) -> None:
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None


def _field(value: str) -> str:
    """One field: `-` when empty, no spaces or control characters inside."""
    if not value:
        return "-"
    return "".join("%" + format(ord(c), "02X") if c <= " " or c == "\x7f" else c for c in value)
