"""Access log lines, in the combined log format or as JSON, one write each.

Workers write these straight to the master's stdout (an fd they inherit), so
the log costs one `write` per request and no trip through the master. A line
shorter than PIPE_BUF is written atomically, so lines never interleave.
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
    ) -> None:
        if self._json:
            line = json.dumps(
                {
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
            )
        else:
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
            line = (
                f'{client} - - [{stamp}] "{method} {target} HTTP/{version}" {status} '
                f'{size if size else "-"} "{referer or "-"}" "{user_agent or "-"}"'
            )
        try:
            os.write(self._fd, (line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass
