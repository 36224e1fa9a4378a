"""Access log lines, in the combined log format or as JSON, one write each.

Workers write these straight to the master's stdout (an fd they inherit), so
the log costs one `write` per request and no trip through the master. A line
shorter than PIPE_BUF is written atomically, so lines never interleave.

A WebSocket gets one line when its connection closes: status 101 (or the
HTTP status it was refused with), the time it was open, and its close code
(`close_code`: that of whichever side closed first, 1006 when the connection
ended without a close frame). In the JSON format the code is a field of its
own and `size` counts the message bytes sent to the client. The combined
format has no field to spare, so a 101 line carries the close code in its
size field: a 101 response has no body, so that field has nothing else to
say, and "101 1000" reads as "switched protocols, closed normally".
"""

from __future__ import annotations

import json
import os
import time


class AccessLog:
    __slots__ = ("_fd", "_json")

    def __init__(self, fd: int, log_format: str) -> None:
        self._fd = fd
        self._json = log_format == "json"

    def write(
        self,
        *,
        client: str,
        method: str,
        target: str,
        version: str,
        status: int,
        size: int,
        referer: str,
        user_agent: str,
        duration: float,
        close_code: int | None = None,
    ) -> None:
        if self._json:
            fields: dict[str, object] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "client": client,
                "method": method,
                "target": target,
                "version": version,
                "status": status,
                "size": size,
                "referer": referer,
                "user_agent": user_agent,
                "duration_ms": round(duration * 1000, 3),
                "pid": os.getpid(),
            }
            if close_code is not None:
                fields["close_code"] = close_code
            line = json.dumps(fields)
        else:
            if close_code is not None:
                size = close_code
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
            line = (
                f'{client} - - [{stamp}] "{method} {target} HTTP/{version}" {status} '
                f'{size if size else "-"} "{referer or "-"}" "{user_agent or "-"}"'
            )
        try:
            os.write(self._fd, (line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass
