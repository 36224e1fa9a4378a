"""Settings of the server and its pools, with the defaults and why.

`poolwarden run` builds these from its options; the config file of later
versions builds the same structs, so both paths share one set of defaults.
"""

from __future__ import annotations

import os
import sys
from typing import Literal

import msgspec

from poolwarden.channel import WebSocketOptions
from poolwarden.http.limits import HeadLimits

Interface = Literal["auto", "wsgi", "asgi"]
AccessLogFormat = Literal["combined", "json"]
StartupFailureAction = Literal["exit", "exit-now", "serve"]
StartMode = Literal["on_demand", "always_running"]

DEFAULT_STATE_DIR = ".poolwarden"


def default_state_dir() -> str:
    return os.environ.get("POOLWARDEN_STATE_DIR") or DEFAULT_STATE_DIR


class PoolSettings(msgspec.Struct, frozen=True):
    """One application pool: which app, how many workers, how they run."""

    name: str
    app: str
    factory: bool = False
    interface: Interface = "auto"
    processes: int = 1
    """Worker processes; IIS's maxProcesses defaults to 1 too."""
    threads: int = 8
    """WSGI threads per worker (ASGI apps run on the worker's loop)."""
    python: str = sys.executable
    working_dir: str | None = None
    env: dict[str, str] = {}
    queue_length: int = 1000
    """Connections waiting for a worker before 503 queue_full; IIS's queueLength."""
    max_concurrency: int = 0
    """Connections one ASGI worker has in use at most (uvicorn's
    `--limit-concurrency`); past it a connection waits in the pool's queue.
    0: no limit."""
    keepalive_timeout: float = 75.0
    """Idle keep-alive seconds; longer than common balancers' 60 s, so the
    server never closes a connection a balancer is about to reuse."""
    pinging_enabled: bool = True
    ping_interval: float = 30.0
    """Seconds between pings of a Ready worker (IIS's pingInterval)."""
    ping_response_time: float = 90.0
    """Seconds a worker has to answer a ping before it is declared hung and
    killed, its stacks dumped first (IIS's pingResponseTime)."""
    idle_timeout: float = 1200.0
    """Seconds without a request before an on-demand pool's worker is shut
    down (IIS's idleTimeout, 20 min; 0 = never)."""
    startup_time_limit: float = 90.0
    """Seconds a worker has to load the app and report Ready, else it is
    killed and counts as a start-up failure; IIS's startupTimeLimit."""
    shutdown_time_limit: float = 90.0
    """Seconds a draining worker gets before it is killed; IIS's default."""
    access_log: bool = True
    access_log_format: AccessLogFormat = "combined"
    scoreboard_slots: int = 256
    """Concurrent requests one ASGI worker records in the scoreboard."""
    recycle_time: float = 29 * 3600.0
    """Recycle a worker this many seconds old (IIS: 29 h; 0 = off)."""
    recycle_requests: int = 0
    """Recycle a worker after this many requests (0 = off)."""
    recycle_memory: int = 0
    """Recycle a worker whose resident memory (RSS) passes this many bytes (0 = off)."""
    recycle_private_memory: int = 0
    """Recycle a worker whose private memory (USS) passes this many bytes (0 = off)."""
    recycle_jitter: float = 0.1
    """Time and request limits vary by up to this fraction per worker, so a
    garden's workers do not all recycle at once."""
    log_event_on_recycle: tuple[str, ...] = ("time", "memory", "private_memory")
    """The recycle reasons written to the event log (IIS's logEventOnRecycle)."""
    memory_hard_limit: int = 0
    """Kill a worker at once, without draining, whose RSS passes this (0 = off)."""
    load_balancer_capability: Literal["http_level", "tcp_level"] = "http_level"
    """How a disabled pool answers: 503 (http_level) or by resetting the
    connection (tcp_level), for balancers that do not read HTTP."""
    auto_restart_after: float = 0.0
    """Seconds after which a pool disabled by rapid-fail protection starts
    again by itself (0: an administrator must, as in IIS)."""
    rapid_fail_enabled: bool = True
    """IIS's rapidFailProtection: disable a pool that keeps failing."""
    rapid_fail_max_crashes: int = 5
    rapid_fail_interval: float = 300.0
    """Failures (`max_crashes`) within this many seconds disable the pool; IIS: 5 in 5 min."""
    start_mode: StartMode = "always_running"
    """`on_demand` (IIS's default for configured pools): the first request
    starts a worker. `poolwarden run` starts its workers at once."""
    user: str | int | None = None
    """Run the workers as this user (name or uid); needs a master running as root."""
    group: str | int | None = None
    auto_start: bool = True
    """Started with the server; `false` leaves the pool stopped until
    `poolwarden pool start`."""
    loop_lag_warning: float = 1.0
    """Seconds an ASGI worker's event loop may be blocked before the worker
    reports it with the stack of what blocks it (0 = never)."""
    request_timeout: float = 0.0
    """Seconds a request may run before it is hung: its client gets 504 and
    its stack goes in an event (0 = never, as in gunicorn and uWSGI)."""
    request_timeout_action: Literal["log", "recycle", "kill"] = "log"
    """What then happens to the worker: nothing (the thread runs on), an
    overlapped recycle, or SIGKILL."""
    recycle_schedule: tuple[str, ...] = ()
    """Times of day ("HH:MM", local) at which every worker is recycled, one at a time."""
    recycle_on_config_change: bool = True
    recycle_overlapping: bool = True
    """Start a replacement before the old worker drains; `False` drains
    first (for apps that cannot run twice at once, e.g. a bound port)."""
    auto_shutdown_command: tuple[str, ...] = ()
    """Run (without a shell) when rapid-fail protection disables the pool."""
    auto_shutdown_time_limit: float = 30.0
    orphan_worker: bool = False
    """Keep a hung or failed worker stopped (SIGSTOP) for inspection instead
    of killing it (IIS's orphanWorkerProcess)."""
    orphan_action_command: tuple[str, ...] = ()
    """Run for each orphaned worker, e.g. `gcore`; POOLWARDEN_PID names it."""
    launch_wrapper: tuple[str, ...] = ()
    """A command put in front of the worker's command line (a debugger, a
    profiler, `strace -f -o FILE`): IIS's Image File Execution Options
    "Debugger" value."""
    core_dumps: bool = False
    """Workers run with their core size limit raised to the hard limit; a
    core the kernel writes into the working directory is moved to
    `STATE_DIR/dumps/POOL-PID.core`. Off by default: cores can be large and
    hold secrets (whatever was in memory)."""
    ws_max_size: int = 16 * 1024 * 1024
    """Largest WebSocket message a client may send, in bytes, else the
    connection is closed with 1009; uvicorn's default."""
    ws_ping_interval: float = 20.0
    """Seconds between the pings an open WebSocket gets from the server, so
    that idle connections stay open through proxies and dead peers are found
    (uvicorn and websockets: 20 s; 0 = no pings)."""
    ws_ping_timeout: float = 20.0
    """Seconds a client has to answer a ping before its WebSocket is closed
    with 1011 (uvicorn and websockets: 20 s; 0 = wait for ever)."""
    ws_per_message_deflate: bool = True
    """Negotiate permessage-deflate (RFC 7692) when the client offers it."""
    max_websockets: int = 0
    """Open WebSockets one worker holds before it answers a new handshake
    503 queue_full (0 = no limit but memory)."""

    def websocket_options(self) -> WebSocketOptions:
        """The WebSocket settings as the worker gets them in its Boot message."""
        return WebSocketOptions(
            max_size=self.ws_max_size,
            ping_interval=self.ws_ping_interval,
            ping_timeout=self.ws_ping_timeout,
            per_message_deflate=self.ws_per_message_deflate,
            max_websockets=self.max_websockets,
        )


class ServerSettings(msgspec.Struct, frozen=True):
    """The master: where it listens and how it treats what arrives."""

    binds: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:8000"])
    state_dir: str = DEFAULT_STATE_DIR
    head_limits: HeadLimits = HeadLimits()
    backlog: int = 2048
    """Listen backlog; gunicorn uses 2048 as well."""
    on_startup_failure: StartupFailureAction = "exit"
    """`exit`: when the app cannot start before anything was served, retry with
    the back-off up to rapid-fail protection's limit, then exit 3 (a terminal, a
    container's restart policy); `exit-now`: exit 3 at the first failure;
    `serve`: keep answering 503."""
    log_level: str = "info"
    dev_mode: bool = False
    events_stdout: bool = False
    """Also write every event as a JSON line to stdout (for log shippers)."""
    front_end_log: bool = True
    """Every request the front end answers itself, as a line in
    `STATE_DIR/frontend.log` (IIS's HTTPERR log)."""
    front_end_log_max_size: int = 10 * 1024 * 1024
    front_end_log_backups: int = 5
    health_path: str | None = None
    """A path answered by the front end on every binding with the server's
    readiness (200, or 503 while a pool is disabled or cannot start), for
    load balancers and readiness probes (`master.health`)."""
