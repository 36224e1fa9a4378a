"""The configuration file: sites, applications and pools, checked before use.

`poolwarden serve -c poolwarden.toml` reads a TOML file shaped like IIS's
applicationHost.config: `[server]`, `[sites.NAME]` with bindings, host names
and `[[sites.NAME.applications]]` (path → pool), and `[pools.NAME]` with the
app, its workers and the IIS knobs (`process_model`, `recycling`,
`rapid_fail`). `docs/config.md` describes every key.

How a file becomes a `Config`::

    text ──tomllib──▶ dict ──_walk (schema = the Structs below)──▶ values + issues
                                   │ durations → float s, sizes → int bytes
                                   ▼
                  cross-checks on the walked values (pools exist, paths
                  unique, bindings parse, host names not claimed twice)
                                   ▼
                  any issue? ── yes ─▶ ConfigError(every issue, with its key path)
                                   ▼ no
                  msgspec.convert(values, ConfigFile) ─▶ relative paths resolved
                  against the file's directory ─▶ Config

Why a walk of our own before msgspec: msgspec stops at the first error, and a
person fixing a file wants every mistake at once. The walk follows the same
Structs msgspec validates against (`forbid_unknown_fields=True`), checks each
value on its own with `msgspec.convert`, and reports `key.path: message`.
Cross-checks look only at values of the right type, so one typo does not
cascade into errors elsewhere; msgspec then builds the whole document from
values already checked.

Pure except `load_config`, which reads the one file.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import msgspec.inspect as mi

from poolwarden.bind_address import BindError, parse_bind
from poolwarden.http.limits import HeadLimits
from poolwarden.routing import Application, RoutingTable, Site, normalize_path
from poolwarden.settings import (
    DEFAULT_STATE_DIR,
    AccessLogFormat,
    Interface,
    PoolSettings,
    ServerSettings,
)
from poolwarden.units import parse_duration, parse_size

# --- value types --------------------------------------------------------------

_UNIT = "poolwarden.unit"
_DESCRIBE = "poolwarden.describe"

Duration = Annotated[float, msgspec.Meta(ge=0, extra={_UNIT: "duration"})]
"""Seconds, written `"90s"`, `"1h30m"` or a number; 0 allowed (means off)."""
PositiveDuration = Annotated[float, msgspec.Meta(gt=0, extra={_UNIT: "duration"})]
"""A duration that must be more than 0: a limit that cannot be switched off."""
Size = Annotated[int, msgspec.Meta(ge=0, extra={_UNIT: "size"})]
"""Bytes, written `"512MiB"`, `"100MB"` or a number; 0 allowed (means off)."""
PositiveSize = Annotated[int, msgspec.Meta(gt=0, extra={_UNIT: "size"})]
Count = Annotated[int, msgspec.Meta(ge=0)]
PositiveCount = Annotated[int, msgspec.Meta(ge=1)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]

Name = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_-]+\Z",
        extra={_DESCRIBE: 'a name made of letters, digits, "_" and "-"'},
    ),
]
"""Site and pool names: they appear in URLs of the control API, file names
and log lines, so they stay plain."""

AppSpec = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[^\W\d]\w*(\.[^\W\d]\w*)*:[^\W\d]\w*(\.[^\W\d]\w*)*\Z",
        extra={_DESCRIBE: 'MODULE:ATTRIBUTE such as "mysite.wsgi:application"'},
    ),
]
HostName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?:(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])\Z",
        extra={_DESCRIBE: 'a host name such as "example.test" or "*.example.test" (no port)'},
    ),
]
TimeOfDay = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?\Z",
        extra={_DESCRIBE: 'a time of day "HH:MM" or "HH:MM:SS" (24-hour)'},
    ),
]
Command = Annotated[list[str], msgspec.Meta(min_length=1)]
"""A program and its arguments, run without a shell."""
HealthPath = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^/[!\"$->@-~]*\Z",
        extra={_DESCRIBE: 'a path such as "/healthz" (no query, no fragment)'},
    ),
]
Argument = Annotated[str, msgspec.Meta(min_length=1, extra={_DESCRIBE: "a non-empty string"})]

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
StartMode = Literal["on_demand", "always_running"]
RequestTimeoutAction = Literal["log", "recycle", "kill"]
RecycleReason = Literal[
    "time", "requests", "schedule", "memory", "private_memory", "on_demand", "config_change"
]
LoadBalancerCapability = Literal["http_level", "tcp_level"]

_MINUTE = 60.0
_HOUR = 60 * _MINUTE
_KIB = 1024
_MIB = 1024 * _KIB


# --- the schema ---------------------------------------------------------------


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every table of the file: unknown keys are mistakes, not extensions."""


class ServerConfig(_Section, frozen=True, kw_only=True):
    """`[server]`: the master process and its front end."""

    state_dir: str = DEFAULT_STATE_DIR
    """Crash files, the front-end log, later the event log and control socket.
    Relative to the config file's directory; absolute once loaded."""
    dev_mode: bool = False
    """Show error details (tracebacks) in 503 pages; never on a public server."""
    backlog: PositiveCount = 2048
    """Listen backlog; gunicorn uses 2048 as well."""
    head_timeout: PositiveDuration = 10.0
    """Time a client has to send a request head, else 408 (IIS waits 120 s,
    nginx 60 s; 10 s keeps slow-loris clients from holding connections)."""
    max_request_line: PositiveCount = 8190
    """Longest request line in bytes, else 414 (nginx's buffer is 8 KiB)."""
    max_header_count: PositiveCount = 100
    """Most header fields, else 431 (gunicorn's limit_request_fields)."""
    max_head_bytes: PositiveSize = 32 * _KIB
    """Longest request head, else 431 (nginx: 4 buffers of 8 KiB; IIS MaxRequestBytes 16 KiB)."""
    log_level: LogLevel = "info"
    front_end_log: bool = True
    """Write the HTTPERR-style log of requests the front end answered itself."""
    front_end_log_max_size: PositiveSize = 10 * _MIB
    """Rotate the front-end log at this size (IIS's HTTPERR rolls at 1 MB)."""
    front_end_log_backups: Count = 5
    """Rotated front-end logs kept."""
    health_path: HealthPath | None = None
    """Answered by the front end on every binding, whatever the Host, with
    the server's readiness (200, or 503 while a pool is disabled or fails to
    start), for load balancers and readiness probes; never sent to an app."""


class ApplicationConfig(_Section, frozen=True, kw_only=True):
    """`[[sites.NAME.applications]]`: a path of a site served by a pool."""

    path: str
    """Mount path, `/` or `/a/b`; it becomes SCRIPT_NAME / root_path."""
    pool: str


class SiteConfig(_Section, frozen=True, kw_only=True):
    """`[sites.NAME]`: where requests arrive and which pool serves which path."""

    bindings: Annotated[list[str], msgspec.Meta(min_length=1)]
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` or `unix:PATH`."""
    hostnames: list[HostName] = []
    """Host names this site answers (exact or `*.` wildcard); empty: any host."""
    applications: Annotated[list[ApplicationConfig], msgspec.Meta(min_length=1)]


class ProcessModelConfig(_Section, frozen=True, kw_only=True):
    """`[pools.NAME.process_model]`: IIS's processModel, with its defaults:
    how long a worker may take to start, stop and answer a ping, how long it
    may sit idle, and how long one request may run."""

    idle_timeout: Duration = 20 * _MINUTE
    """Stop a worker idle this long (IIS: 20 min; 0 = never)."""
    startup_time_limit: PositiveDuration = 90.0
    shutdown_time_limit: PositiveDuration = 90.0
    """Time a draining worker gets to finish its requests before it is killed."""
    pinging_enabled: bool = True
    ping_interval: PositiveDuration = 30.0
    ping_response_time: PositiveDuration = 90.0
    loop_lag_warning: Duration = 1.0
    """Log when a worker's event loop is this late (0 = never)."""
    request_timeout: Duration = 0.0
    """A request running longer than this is hung (0 = never)."""
    request_timeout_action: RequestTimeoutAction = "log"


class RecyclingConfig(_Section, frozen=True, kw_only=True):
    """`[pools.NAME.recycling]`: IIS's recycling.periodicRestart. Reserved."""

    time: Duration = 29 * _HOUR
    """Recycle a worker this old (IIS: 29 h, so it drifts around the clock; 0 = off)."""
    requests: Count = 0
    schedule: list[TimeOfDay] = []
    memory: Size = 0
    private_memory: Size = 0
    memory_hard_limit: Size = 0
    on_config_change: bool = True
    overlapping: bool = True
    log_event_on_recycle: list[RecycleReason] = msgspec.field(
        default_factory=lambda: ["time", "memory", "private_memory"]
    )
    jitter: Fraction = 0.1
    """Spread time and request limits by up to this fraction, so that the
    workers of a garden do not all recycle at once."""


class RapidFailConfig(_Section, frozen=True, kw_only=True):
    """`[pools.NAME.rapid_fail]`: IIS's failure settings. Reserved."""

    enabled: bool = True
    max_crashes: PositiveCount = 5
    interval: PositiveDuration = 5 * _MINUTE
    auto_shutdown_command: Command | None = None
    auto_shutdown_time_limit: PositiveDuration = 30.0
    load_balancer_capability: LoadBalancerCapability = "http_level"
    orphan_worker: bool = False
    orphan_action_command: Command | None = None
    auto_restart_after: Duration = 0.0
    """Start a pool stopped by rapid-fail protection again after this long (0 = never)."""


class PoolConfig(_Section, frozen=True, kw_only=True):
    """`[pools.NAME]`: one application pool and its worker processes."""

    app: AppSpec
    factory: bool = False
    interface: Interface = "auto"
    python: str = sys.executable
    """The pool's interpreter (e.g. a venv's bin/python); a path with a slash is
    resolved against the config file's directory, a bare name through PATH."""
    working_dir: str = "."
    """The workers' directory (the app is imported from there); default: the
    config file's directory."""
    env: dict[str, str] = {}
    start_mode: StartMode = "on_demand"
    auto_start: bool = True
    max_processes: PositiveCount = 1
    threads: PositiveCount = 8
    queue_length: PositiveCount = 1000
    max_concurrency: Count = 0
    """Connections one ASGI worker has in use at most; 0: no limit."""
    user: str | int | None = None
    group: str | int | None = None
    keepalive_timeout: PositiveDuration = 75.0
    access_log: bool = True
    access_log_format: AccessLogFormat = "combined"
    launch_wrapper: list[Argument] = []
    """A command put in front of the worker's command line (`gdb -batch -ex run
    -ex bt --args`, `strace -f -o FILE`, `py-spy record -o FILE --`); IIS's
    Image File Execution Options "Debugger". Its program is a path (resolved
    like `python`) or is looked up on PATH (the pool's `env` PATH if set)."""
    core_dumps: bool = False
    """Let workers write core files (soft RLIMIT_CORE raised to the hard one);
    cores written into the working directory are moved to `STATE_DIR/dumps`."""
    ws_max_size: PositiveSize = 16 * _MIB
    """Largest WebSocket message a client may send, else 1009 (uvicorn's default)."""
    ws_ping_interval: Duration = 20.0
    """Time between the server's pings on an open WebSocket (0 = no pings)."""
    ws_ping_timeout: Duration = 20.0
    """Time a client has to answer a ping, else 1011 (0 = wait for ever)."""
    ws_per_message_deflate: bool = True
    """Negotiate permessage-deflate compression when the client offers it."""
    max_websockets: Count = 0
    """Open WebSockets per worker before a handshake gets 503 queue_full (0 = no limit)."""
    process_model: ProcessModelConfig = ProcessModelConfig()
    recycling: RecyclingConfig = RecyclingConfig()
    rapid_fail: RapidFailConfig = RapidFailConfig()


class ConfigFile(_Section, frozen=True, kw_only=True):
    """The whole document, as written (before paths are resolved)."""

    server: ServerConfig = ServerConfig()
    sites: dict[Name, SiteConfig] = {}
    pools: dict[Name, PoolConfig] = {}


# --- errors -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake (or warning) and the key it is about, e.g. `pools.web.threads`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The file cannot be used; `errors` lists every mistake found.

    Mistakes of type and form come first, in file order, then those between
    keys (an application naming a missing pool, a host name claimed twice).

    The CLI prints `str(error)` (one issue per line) and exits; nothing was
    started, so nothing needs undoing.
    """

    def __init__(self, errors: Iterable[ConfigIssue], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(format_issues(self.errors))


def format_issues(errors: Iterable[ConfigIssue]) -> str:
    """One issue per line, `key.path: message`, for the CLI and `str(ConfigError)`."""
    return "\n".join(str(issue) for issue in errors)


# --- the loaded configuration -------------------------------------------------


class PoolDiff(NamedTuple):
    """Pool names by what a reload must do with them."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]


@dataclass(frozen=True, slots=True)
class Config:
    """A checked configuration with absolute paths, ready to serve."""

    server: ServerConfig
    sites: dict[str, SiteConfig]
    """Bindings stripped, application paths normalized (`/api/` → `/api`)."""
    pools: dict[str, PoolConfig]
    source: str = "<string>"
    """The file it came from, for messages."""
    base_dir: str = "."
    """The directory relative paths were resolved against."""
    warnings: list[ConfigIssue] = field(default_factory=list)
    """Things that are allowed but probably not meant, e.g. an unused pool."""

    def routing_table(self) -> RoutingTable:
        """Sites keyed by their bindings as written (stripped): the front end
        names each listener by that same text."""
        return RoutingTable(
            [
                Site(
                    name=name,
                    bindings=tuple(site.bindings),
                    hostnames=tuple(site.hostnames),
                    applications=tuple(
                        Application(path=app.path, pool=app.pool) for app in site.applications
                    ),
                )
                for name, site in self.sites.items()
            ],
            health_path=self.server.health_path,
        )

    def pool_settings(self, name: str) -> PoolSettings:
        """What the master needs to run pool `name` today (KeyError if there is none)."""
        pool = self.pools[name]
        return PoolSettings(
            name=name,
            app=pool.app,
            factory=pool.factory,
            interface=pool.interface,
            processes=pool.max_processes,
            threads=pool.threads,
            python=pool.python,
            working_dir=pool.working_dir,
            env=dict(pool.env),
            queue_length=pool.queue_length,
            max_concurrency=pool.max_concurrency,
            keepalive_timeout=pool.keepalive_timeout,
            shutdown_time_limit=pool.process_model.shutdown_time_limit,
            startup_time_limit=pool.process_model.startup_time_limit,
            pinging_enabled=pool.process_model.pinging_enabled,
            ping_interval=pool.process_model.ping_interval,
            ping_response_time=pool.process_model.ping_response_time,
            idle_timeout=pool.process_model.idle_timeout,
            access_log=pool.access_log,
            access_log_format=pool.access_log_format,
            start_mode=pool.start_mode,
            auto_start=pool.auto_start,
            recycle_time=pool.recycling.time,
            recycle_requests=pool.recycling.requests,
            recycle_memory=pool.recycling.memory,
            recycle_private_memory=pool.recycling.private_memory,
            recycle_jitter=pool.recycling.jitter,
            log_event_on_recycle=tuple(pool.recycling.log_event_on_recycle),
            memory_hard_limit=pool.recycling.memory_hard_limit,
            load_balancer_capability=pool.rapid_fail.load_balancer_capability,
            auto_restart_after=pool.rapid_fail.auto_restart_after,
            rapid_fail_enabled=pool.rapid_fail.enabled,
            rapid_fail_max_crashes=pool.rapid_fail.max_crashes,
            rapid_fail_interval=pool.rapid_fail.interval,
            user=pool.user,
            group=pool.group,
            loop_lag_warning=pool.process_model.loop_lag_warning,
            request_timeout=pool.process_model.request_timeout,
            request_timeout_action=pool.process_model.request_timeout_action,
            recycle_schedule=tuple(pool.recycling.schedule),
            recycle_on_config_change=pool.recycling.on_config_change,
            recycle_overlapping=pool.recycling.overlapping,
            auto_shutdown_command=tuple(pool.rapid_fail.auto_shutdown_command or ()),
            auto_shutdown_time_limit=pool.rapid_fail.auto_shutdown_time_limit,
            orphan_worker=pool.rapid_fail.orphan_worker,
            orphan_action_command=tuple(pool.rapid_fail.orphan_action_command or ()),
            launch_wrapper=tuple(pool.launch_wrapper),
            core_dumps=pool.core_dumps,
            ws_max_size=pool.ws_max_size,
            ws_ping_interval=pool.ws_ping_interval,
            ws_ping_timeout=pool.ws_ping_timeout,
            ws_per_message_deflate=pool.ws_per_message_deflate,
            max_websockets=pool.max_websockets,
        )

    def server_settings(self) -> ServerSettings:
        """The master's settings: every site's bindings once, in file order.

        `on_startup_failure` is `serve`: with a config file the server hosts
        several pools, and one broken app must not take the others down.
        """
        server = self.server
        return ServerSettings(
            binds=list(dict.fromkeys(b for site in self.sites.values() for b in site.bindings)),
            state_dir=server.state_dir,
            head_limits=HeadLimits(
                max_request_line=server.max_request_line,
                max_header_count=server.max_header_count,
                max_head_bytes=server.max_head_bytes,
                head_timeout=server.head_timeout,
            ),
            backlog=server.backlog,
            on_startup_failure="serve",
            log_level=server.log_level,
            dev_mode=server.dev_mode,
            front_end_log=server.front_end_log,
            front_end_log_max_size=server.front_end_log_max_size,
            front_end_log_backups=server.front_end_log_backups,
            health_path=server.health_path,
        )

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as plain JSON-able data, for `config show`.

        Durations are float seconds and sizes int bytes (what the server uses),
        paths are absolute, every default is filled in. Fed back to
        `config_from_dict` it gives the same configuration.
        """
        document = {"server": self.server, "sites": self.sites, "pools": self.pools}
        result: dict[str, Any] = msgspec.to_builtins(document)
        return result


def diff_pools(old: Config, new: Config) -> PoolDiff:
    """Which pools a reload adds, removes, changes (any key) or leaves alone."""
    return PoolDiff(
        added=[name for name in new.pools if name not in old.pools],
        removed=[name for name in old.pools if name not in new.pools],
        changed=[n for n in new.pools if n in old.pools and old.pools[n] != new.pools[n]],
        unchanged=[n for n in new.pools if n in old.pools and old.pools[n] == new.pools[n]],
    )


# --- loading ------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the file at `path`; `ConfigError` lists every mistake."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            raw = file.read()
    except OSError as error:
        issue = ConfigIssue(source, f"cannot read the file: {error.strerror or error}")
        raise ConfigError([issue], source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        issue = ConfigIssue(source, f"not UTF-8 text (byte {error.start}); TOML files are UTF-8")
        raise ConfigError([issue], source) from None
    return parse_config(text, os.path.dirname(os.path.abspath(source)), source)


def parse_config(text: str, base_dir: str, source: str = "<string>") -> Config:
    """Check TOML `text`; relative paths in it are relative to `base_dir`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_issue(text, source, error)], source) from None
    return config_from_dict(data, base_dir, source)


def config_from_dict(data: Mapping[str, Any], base_dir: str, source: str = "<string>") -> Config:
    """Check an already decoded document (e.g. `Config.to_dict()` output)."""
    issues: list[ConfigIssue] = []
    values = _walk(dict(data), ConfigFile, "", issues)
    _check_presence(values, issues)
    sites, pools = _tables(values, "sites"), _tables(values, "pools")
    for name, site in sites.items():
        _check_site(name, site, set(pools), issues)
    for name, pool in pools.items():
        _check_launch_wrapper(name, pool, os.path.abspath(base_dir), issues)
    _check_shared_bindings(sites, issues)
    if issues:
        raise ConfigError(issues, source)
    try:
        document = msgspec.convert(values, ConfigFile, strict=True)
    except msgspec.ValidationError as error:  # the walk should have said it first
        raise ConfigError([ConfigIssue("", str(error))], source) from None
    return _resolved(document, os.path.abspath(base_dir), source)


def _resolved(document: ConfigFile, base: str, source: str) -> Config:
    """The checked document with absolute paths, normalized bindings and mount paths."""
    server = document.server
    return Config(
        server=msgspec.structs.replace(server, state_dir=_resolve(base, server.state_dir)),
        sites={name: _normalize_site(site) for name, site in document.sites.items()},
        pools={name: _resolve_pool(base, pool) for name, pool in document.pools.items()},
        source=source,
        base_dir=base,
        warnings=_unused_pools(document.sites, document.pools),
    )


def _syntax_issue(text: str, source: str, error: tomllib.TOMLDecodeError) -> ConfigIssue:
    """`FILE:LINE:COLUMN` and tomllib's reason (Python 3.11 puts both in the text)."""
    message = str(error)
    line, column = getattr(error, "lineno", None), getattr(error, "colno", None)
    reason = getattr(error, "msg", None) or message
    located = re.search(r"\s*\(at line (\d+), column (\d+)\)\Z", message)
    if located:
        reason = message[: located.start()]
        line, column = int(located.group(1)), int(located.group(2))
    elif message.endswith("(at end of document)"):
        reason = message.removesuffix("(at end of document)").rstrip()
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    where = f"{source}:{line}:{column}" if line is not None else source
    return ConfigIssue(where, f"invalid TOML: {reason[:1].lower()}{reason[1:]}")


# --- the walk: every value checked against the schema, every issue kept ----------


def _join(path: str, key: Any) -> str:
    """`pools` + `web` → `pools.web`; a key that is not a bare TOML key is quoted."""
    bare = isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key)
    part = key if bare else _show(key)
    return f"{path}.{part}" if path else part


def _show(value: Any) -> str:
    """A value as TOML would write it, short enough for one line of a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = msgspec.json.encode(value).decode()
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if value is None:
        return "nothing"
    if hasattr(value, "isoformat"):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


def _unwrap(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """The type under `Annotated[...]` and the merged `extra` of its Meta."""
    if typing.get_origin(annotation) is Annotated:
        base, *metas = typing.get_args(annotation)
        extra: dict[str, Any] = {}
        for meta in metas:
            if isinstance(meta, msgspec.Meta) and meta.extra:
                extra.update(meta.extra)
        return base, extra
    return annotation, {}


def _walk(value: Any, annotation: Any, path: str, issues: list[ConfigIssue]) -> Any:
    """`value` checked against `annotation`; issues appended; units converted.

    Returns the value with durations and sizes as numbers, ready for
    `msgspec.convert`; after an issue the returned value is not to be trusted.
    """
    base, extra = _unwrap(annotation)
    unit = extra.get(_UNIT)
    if unit is not None:
        return _walk_unit(value, annotation, unit, path, issues)
    if isinstance(base, type) and issubclass(base, msgspec.Struct):
        return _walk_struct(value, base, path, issues)
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(base) if arg is not type(None)]
        if value is None and len(members) < len(typing.get_args(base)):
            return None
        if len(members) == 1:
            return _walk(value, members[0], path, issues)
    if origin is list:
        return _walk_list(value, annotation, typing.get_args(base)[0], path, issues)
    if origin is dict:
        key_type, value_type = typing.get_args(base)
        return _walk_dict(value, annotation, key_type, value_type, path, issues)
    return _walk_leaf(value, annotation, path, issues)


def _walk_struct(
    value: Any, cls: type[msgspec.Struct], path: str, issues: list[ConfigIssue]
) -> Any:
    if not isinstance(value, dict):
        issues.append(ConfigIssue(path, f"expected a table, got {_show(value)}"))
        return value
    fields = {info.encode_name: info for info in msgspec.structs.fields(cls)}
    checked: dict[str, Any] = {}
    for key, item in value.items():
        info = fields.get(key)
        if info is None:
            issues.append(ConfigIssue(_join(path, key), "unknown key"))
            continue
        checked[key] = _walk(item, info.type, _join(path, key), issues)
    for key, info in fields.items():
        if info.required and key not in value:
            issues.append(ConfigIssue(_join(path, key), "required key missing"))
    return checked


def _walk_list(
    value: Any, annotation: Any, item_type: Any, path: str, issues: list[ConfigIssue]
) -> Any:
    if not isinstance(value, list):
        expected = _describe(annotation, limits=False)
        issues.append(ConfigIssue(path, f"expected {expected}, got {_show(value)}"))
        return value
    before = len(issues)
    items = [_walk(item, item_type, f"{path}[{index}]", issues) for index, item in enumerate(value)]
    if len(issues) == before:
        _check_whole(items, annotation, value, path, issues)
    return items


def _walk_dict(
    value: Any,
    annotation: Any,
    key_type: Any,
    value_type: Any,
    path: str,
    issues: list[ConfigIssue],
) -> Any:
    if not isinstance(value, dict):
        expected = _describe(annotation, limits=False)
        issues.append(ConfigIssue(path, f"expected {expected}, got {_show(value)}"))
        return value
    checked: dict[str, Any] = {}
    for key, item in value.items():
        try:
            msgspec.convert(key, key_type, strict=True)
        except msgspec.ValidationError:
            issues.append(ConfigIssue(_join(path, key), f"invalid key: use {_describe(key_type)}"))
        checked[key] = _walk(item, value_type, _join(path, key), issues)
    return checked


def _walk_unit(value: Any, annotation: Any, unit: str, path: str, issues: list[ConfigIssue]) -> Any:
    """A duration or size: parsed, then held to the field's bounds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        expected = _describe(annotation, limits=False)
        issues.append(ConfigIssue(path, f"expected {expected}, got {_show(value)}"))
        return value
    try:
        number = parse_duration(value) if unit == "duration" else parse_size(value)
    except ValueError as error:
        issues.append(ConfigIssue(path, str(error)))
        return value
    _check_whole(number, annotation, value, path, issues)
    return number


def _walk_leaf(value: Any, annotation: Any, path: str, issues: list[ConfigIssue]) -> Any:
    return _check_whole(value, annotation, value, path, issues)


def _check_whole(
    value: Any, annotation: Any, written: Any, path: str, issues: list[ConfigIssue]
) -> Any:
    """msgspec's verdict on `value`; the message quotes what was `written`.

    The limits of a type (`>= 1`, non-empty) are named only when the value
    has the right type, so `threads = "eight"` reads "expected int".
    """
    try:
        return msgspec.convert(value, annotation, strict=True)
    except msgspec.ValidationError:
        base, _ = _unwrap(annotation)
        expected = _describe(annotation, limits=_converts(value, base))
        issues.append(ConfigIssue(path, f"expected {expected}, got {_show(written)}"))
        return value


def _converts(value: Any, annotation: Any) -> bool:
    try:
        msgspec.convert(value, annotation, strict=True)
    except msgspec.ValidationError:
        return False
    return True


def _describe(annotation: Any, limits: bool = True) -> str:
    """What a key accepts, in the words of an error message: `int >= 1`."""
    base, _ = _unwrap(annotation)
    if typing.get_origin(base) is Literal:  # in the order written, not sorted
        return "one of " + ", ".join(_show(choice) for choice in typing.get_args(base))
    return _describe_info(mi.type_info(annotation), limits)


def _describe_info(info: mi.Type, limits: bool = True) -> str:
    if isinstance(info, mi.Metadata):
        extra = info.extra or {}
        if _DESCRIBE in extra:
            return str(extra[_DESCRIBE])
        if _UNIT in extra:
            return str(extra[_UNIT]) + (_bounds(info.type) if limits else "")
        return _describe_info(info.type, limits)
    if isinstance(info, mi.IntType | mi.FloatType):
        name = "int" if isinstance(info, mi.IntType) else "number"
        return name + (_bounds(info) if limits else "")
    if isinstance(info, mi.ListType):
        empty = "non-empty " if info.min_length and limits else ""
        return f"{empty}array of {_describe_info(info.item_type)}"
    if isinstance(info, mi.DictType):
        return f"table of {_describe_info(info.value_type)}"
    if isinstance(info, mi.UnionType):
        members = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(_describe_info(member, limits) for member in members)
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(_show(choice) for choice in info.values)
    simple = {mi.BoolType: "bool", mi.StrType: "str", mi.StructType: "table"}
    return simple.get(type(info), type(info).__name__)


def _bounds(info: mi.Type) -> str:
    """` >= 1`, ` > 0`, ` >= 0 and <= 1`: the numeric limits of a type."""
    limits = [
        (op, getattr(info, name, None))
        for op, name in ((">=", "ge"), (">", "gt"), ("<=", "le"), ("<", "lt"))
    ]
    text = " and ".join(f"{op} {bound}" for op, bound in limits if bound is not None)
    return f" {text}" if text else ""


# --- sections and cross-checks --------------------------------------------------

_T = typing.TypeVar("_T")


def _tables(values: Any, key: str) -> dict[str, Any]:
    """The walked `[key.NAME]` tables, valid names or not (empty if `key` is no table).

    Cross-checks read these rather than the built sections, so that a typo in
    one key of a site does not hide a wrong pool name in the same site. They
    look only at values of the right type; the walk reported the others.
    """
    tables = values.get(key) if isinstance(values, dict) else None
    return tables if isinstance(tables, dict) else {}


def _items(table: Any, key: str, kind: type[_T]) -> list[tuple[int, _T]]:
    """`(index, item)` for the items of array `table[key]` that are of `kind`."""
    items = table.get(key) if isinstance(table, dict) else None
    if not isinstance(items, list):
        return []
    return [(index, item) for index, item in enumerate(items) if isinstance(item, kind)]


def _check_presence(values: Any, issues: list[ConfigIssue]) -> None:
    """A server with no site serves nothing; one with no pool runs nothing."""
    if not isinstance(values, dict):
        return
    for key, what in (("sites", "site"), ("pools", "pool")):
        if values.get(key, {}) == {}:  # a value of another type was reported by the walk
            issues.append(ConfigIssue(key, f"no {what}s: define at least one [{key}.NAME]"))


def _check_site(name: str, site: Any, pools: set[str], issues: list[ConfigIssue]) -> None:
    path = _join("sites", name)
    for index, binding in _items(site, "bindings", str):
        try:
            parse_bind(binding.strip())
        except BindError as error:
            reason = str(error).removeprefix(f"bind {binding.strip()!r}: ")
            where = f"{path}.bindings[{index}]"
            issues.append(ConfigIssue(where, f"invalid binding {_show(binding)}: {reason}"))
    seen: dict[str, int] = {}
    for index, app in _items(site, "applications", dict):
        where = f"{path}.applications[{index}]"
        mount, pool = app.get("path"), app.get("pool")
        if isinstance(mount, str):
            _check_mount(mount, index, seen, f"{where}.path", issues)
        if isinstance(pool, str) and pool not in pools:
            issues.append(ConfigIssue(f"{where}.pool", f"no pool named {_show(pool)}"))


def _check_launch_wrapper(name: str, pool: Any, base: str, issues: list[ConfigIssue]) -> None:
    """The wrapper's program must be there when a worker starts: a path to an
    executable file, or a name found on the PATH the worker is started with.

    This reads the file system (the one check that does): a typo in a
    debugger's name should stop the file at `config check`, not surface as a
    pool whose every start fails.
    """
    items = _items(pool, "launch_wrapper", str)
    if not items or items[0][0] != 0 or not items[0][1]:
        return
    program = items[0][1]
    where = f"{_join('pools', name)}.launch_wrapper[0]"
    if "/" in program or program.startswith("~"):
        path = _resolve(base, program)
        if not os.path.isfile(path):
            issues.append(ConfigIssue(where, f"{_show(program)}: no such file ({path})"))
        elif not os.access(path, os.X_OK):
            issues.append(ConfigIssue(where, f"{_show(program)}: not executable ({path})"))
        return
    env = pool.get("env") if isinstance(pool, dict) else None
    search = env.get("PATH") if isinstance(env, dict) else None
    if not isinstance(search, str):
        search = os.environ.get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        issues.append(ConfigIssue(where, f"{_show(program)} not found on PATH"))


def _check_mount(
    mount: str, index: int, seen: dict[str, int], where: str, issues: list[ConfigIssue]
) -> None:
    """An application path is absolute and unique within its site, once normalized."""
    if not mount.startswith("/"):
        issues.append(ConfigIssue(where, f'must start with "/", got {_show(mount)}'))
        return
    normalized = normalize_path(mount)
    if normalized in seen:
        message = f"{_show(normalized)} is already the path of applications[{seen[normalized]}]"
        issues.append(ConfigIssue(where, message))
    seen.setdefault(normalized, index)


def _check_shared_bindings(sites: Mapping[str, Any], issues: list[ConfigIssue]) -> None:
    """Sites sharing a listener must be told apart by host name, as in IIS.

    The front end keys listeners by their text, so one address must be
    written one way: `:8000` and `0.0.0.0:8000` in two sites would be two
    listeners on the same port.
    """
    first: dict[tuple[str, str | int], tuple[str, str]] = {}
    sharing: dict[str, list[str]] = {}
    for name, site in sites.items():
        for index, binding in _items(site, "bindings", str):
            text, where = binding.strip(), f"{_join('sites', name)}.bindings[{index}]"
            try:
                address = parse_bind(text)
            except BindError:
                continue  # reported by _check_site
            spelled, at = first.setdefault(address, (text, where))
            if spelled != text:
                message = (
                    f"{_show(text)} is the address of {_show(spelled)} ({at}): write it the "
                    "same way so that the sites share one listener"
                )
                issues.append(ConfigIssue(where, message))
            elif name not in sharing.setdefault(text, []):
                sharing[text].append(name)
    for binding, names in sharing.items():
        _check_hostnames(binding, {name: sites[name] for name in names}, issues)


def _check_hostnames(binding: str, sites: Mapping[str, Any], issues: list[ConfigIssue]) -> None:
    """One site per host name on a binding, and at most one that takes any host."""
    catch_all: str | None = None
    owners: dict[str, str] = {}
    for name, site in sites.items():
        path = _join("sites", name)
        if site.get("hostnames", []) == []:
            if catch_all is None:
                catch_all = name
            else:
                message = (
                    f"site {_show(catch_all)} already takes any host on {_show(binding)}: "
                    "give one of them hostnames"
                )
                issues.append(ConfigIssue(f"{path}.hostnames", message))
        for index, host in _items(site, "hostnames", str):
            owner = owners.setdefault(host.lower().rstrip("."), name)
            if owner != name:
                message = (
                    f"{_show(host)} on {_show(binding)} is already claimed by site {_show(owner)}"
                )
                issues.append(ConfigIssue(f"{path}.hostnames[{index}]", message))


def _unused_pools(
    sites: Mapping[str, SiteConfig], pools: Mapping[str, PoolConfig]
) -> list[ConfigIssue]:
    used = {app.pool for site in sites.values() for app in site.applications}
    return [
        ConfigIssue(_join("pools", name), "no application uses this pool")
        for name in pools
        if name not in used
    ]


# --- paths ----------------------------------------------------------------------


def _resolve(base: str, path: str) -> str:
    """`path` made absolute against `base` (the config file's directory)."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _resolve_pool(base: str, pool: PoolConfig) -> PoolConfig:
    python = pool.python
    if "/" in python or python.startswith("~"):
        python = _resolve(base, python)
    wrapper = list(pool.launch_wrapper)
    if wrapper and ("/" in wrapper[0] or wrapper[0].startswith("~")):
        wrapper[0] = _resolve(base, wrapper[0])
    return msgspec.structs.replace(
        pool, python=python, working_dir=_resolve(base, pool.working_dir), launch_wrapper=wrapper
    )


def _normalize_site(site: SiteConfig) -> SiteConfig:
    """Bindings as the front end names listeners; paths as routing compares them."""
    return msgspec.structs.replace(
        site,
        bindings=[binding.strip() for binding in site.bindings],
        applications=[
            msgspec.structs.replace(app, path=normalize_path(app.path)) for app in site.applications
        ],
    )
