"""A blocking client of the control API, for the CLI and for scripts.

    ControlClient(state_dir) ──HTTP/1.1 over STATE_DIR/control.sock──▶ master

One connection per request, a timeout on each (10 s; pool actions wait for
the action, so the CLI gives them 120 s). Failures are one of three types,
all `ControlClientError`, whose message is one line a person can act on:

- `ServerNotRunning`: no socket, or nobody answers on it;
- `ControlError`: the server answered with an error (status, code, message,
  and for an invalid config the issues);
- `ControlConnectionError`: the socket is there but talking failed (no
  permission, timeout, a broken answer).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from poolwarden.master.control import socket_path
from poolwarden.unix_paths import reachable

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for an answer: every read-only route answers at once."""
ACTION_TIMEOUT = 120.0
"""Seconds to wait for a pool start, stop or recycle: a stop waits for the
workers to drain (IIS's shutdownTimeLimit is 90 s)."""


class ControlClientError(Exception):
    """A control request failed; `str()` is one line for the user."""


class ServerNotRunning(ControlClientError):
    """No server answers in the state directory."""


class ControlConnectionError(ControlClientError):
    """The socket exists but the exchange failed (permission, timeout, garbage)."""


class ControlError(ControlClientError):
    """The server answered with an error body `{"error": {...}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        issues: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.issues = issues or []


@dataclass(frozen=True, slots=True)
class ControlResponse:
    """A decoded answer, error or not."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased names."""

    def raise_for_error(self) -> Any:
        """The body for a 2xx answer, else `ControlError` from the error body."""
        if self.status < 400:
            return self.body
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if not isinstance(error, dict):
            raise ControlError(self.status, "unknown", f"HTTP {self.status} without an error body")
        issues = error.get("issues")
        raise ControlError(
            self.status,
            str(error.get("code", "unknown")),
            str(error.get("message", "")),
            issues if isinstance(issues, list) else None,
        )


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, address: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.address = address

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """Talks to the server whose state directory is `state_dir`."""

    def __init__(self, state_dir: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.state_dir = os.fspath(state_dir)
        self.path = socket_path(self.state_dir)
        self.timeout = timeout

    def get(self, path: str, *, timeout: float | None = None) -> Any:
        """GET `path` (e.g. `/v1/pools`): the JSON body, or `ControlError`."""
        return self.request("GET", path, timeout=timeout).raise_for_error()

    def post(self, path: str, *, timeout: float | None = None) -> Any:
        """POST `path` (no body): the JSON body, or `ControlError`."""
        return self.request("POST", path, timeout=timeout).raise_for_error()

    def request(self, method: str, path: str, *, timeout: float | None = None) -> ControlResponse:
        """One request; the answer whatever its status (for `/v1/health`'s 503)."""
        seconds = self.timeout if timeout is None else timeout
        try:
            with reachable(self.path) as address:
                status, headers, data = _exchange(address, method, path, seconds)
        except (FileNotFoundError, NotADirectoryError):
            raise ServerNotRunning(
                f"no poolwarden server is running in {self.state_dir} "
                f"(no control socket at {self.path})"
            ) from None
        except ConnectionRefusedError:
            raise ServerNotRunning(
                f"no poolwarden server is running in {self.state_dir} "
                "(connection refused: the server is gone)"
            ) from None
        except PermissionError:
            raise ControlConnectionError(
                f"permission denied on {self.path}: the control API is for root "
                "and the server's own user"
            ) from None
        except TimeoutError:
            raise ControlConnectionError(
                f"the server did not answer {method} {path} within {seconds:g}s"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise ControlConnectionError(
                f"lost the connection to the server: {error or type(error).__name__}"
            ) from None
        try:
            body = json.loads(data) if data else None
        except ValueError:
            raise ControlConnectionError(
                f"the server's answer to {method} {path} is not JSON (HTTP {status})"
            ) from None
        return ControlResponse(status, body, headers)


def _exchange(
    address: str, method: str, path: str, timeout: float
) -> tuple[int, dict[str, str], bytes]:
    connection = _UnixConnection(address, timeout)
    try:
        connection.request(method, path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        data = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, data
    finally:
        connection.close()
