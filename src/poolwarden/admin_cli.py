"""The admin commands: IIS's `appcmd` for a running server, over the control API.

    poolwarden pools | pool start NAME | wp | requests | stack | config ... | health
        │ locate the state directory (--state-dir, -c FILE, environment)
        ▼
    ControlClient ──STATE_DIR/control.sock──▶ master ──▶ JSON
        │
        ▼
    format_* (pure: JSON → text or a rich table) ──▶ print_* (thin) ──▶ stdout

`register(main)` adds the commands to the top-level `poolwarden` group.
Every command but `config check` talks to a running server; without one it
prints one line to stderr and exits 1. `--json` prints the server's answer
as it came. Exit status: 0 done (for `health`: the server is ready), 1
anything else (no server, an error answer, an invalid config, not ready), 2
a usage error.

rich is imported here and in the CLI only: never by the master or workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import click
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from poolwarden.config import Config, ConfigError, ConfigIssue, load_config
from poolwarden.control_client import (
    ACTION_TIMEOUT,
    ControlClient,
    ControlClientError,
    ControlError,
)
from poolwarden.events.render import format_age
from poolwarden.master import core_dumps
from poolwarden.settings import DEFAULT_STATE_DIR
from poolwarden.units import parse_duration

F = TypeVar("F", bound=Callable[..., Any])

STATE_COLORS = {
    "started": "green",
    "starting": "yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "disabled": "red",
    "startup_failed": "red",
    "ready": "green",
    "retiring": "yellow",
    "draining": "yellow",
}
"""Pool and worker states; any other state is shown uncolored."""
ACTION_DONE = {
    "start": ("started", "started"),
    "stop": ("stopped", "stopped"),
    "recycle": ("recycled", "started"),
}
"""Per action: the word for done, and the pool state that means done."""
NONE = "-"
"""What a table shows for a value the server does not know (None)."""
PY_SPY_TIMEOUT = 10.0
"""Seconds `py-spy dump` gets per worker: it pauses the process for well under
a second; a worker it cannot read in 10 s will not be read in 60."""
PY_SPY_INSTALL = "pip install py-spy"
PTRACE_HINT = (
    "py-spy reads the worker's memory with ptrace: run this command as root, or as the "
    "workers' user with kernel.yama.ptrace_scope = 0 (sysctl -w kernel.yama.ptrace_scope=0); "
    "in a container, grant the SYS_PTRACE capability"
)


# --- where the server is -----------------------------------------------------------


class StateDirError(Exception):
    """The state directory cannot be found: the config file named is unusable."""

    def __init__(self, config_file: str, issues: list[ConfigIssue]) -> None:
        super().__init__(f"cannot read the state directory from {config_file}")
        self.config_file = config_file
        self.issues = issues


def locate_state_dir(
    state_dir: str | None, config_file: str | None, environ: Mapping[str, str]
) -> str:
    """The state directory of the server to talk to.

    In order: `--state-dir`; `-c FILE` (the file's `server.state_dir`);
    `$POOLWARDEN_CONFIG` (likewise: the file a `serve` of this host uses);
    `$POOLWARDEN_STATE_DIR`; `.poolwarden`. Giving both options is a usage
    error (the caller checks). A config file that is invalid but still TOML
    gives its `server.state_dir` anyway, so that `config reload` can reach
    the server and have it report the mistakes; one that is not TOML raises
    `StateDirError`.
    """
    if state_dir:
        return state_dir
    config_file = config_file or environ.get("POOLWARDEN_CONFIG") or None
    if config_file:
        return _state_dir_of(config_file)
    return environ.get("POOLWARDEN_STATE_DIR") or DEFAULT_STATE_DIR


def _state_dir_of(config_file: str) -> str:
    try:
        return load_config(config_file).server.state_dir
    except ConfigError as error:
        issues = error.errors
    try:
        with open(config_file, "rb") as file:
            document = tomllib.load(file)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise StateDirError(config_file, issues) from None
    server = document.get("server")
    state_dir = server.get("state_dir") if isinstance(server, dict) else None
    if not isinstance(state_dir, str):
        state_dir = DEFAULT_STATE_DIR
    base = os.path.dirname(os.path.abspath(config_file))
    return os.path.normpath(os.path.join(base, os.path.expanduser(state_dir)))


# --- formatting (pure) ---------------------------------------------------------------


def _text(value: Any) -> str:
    return NONE if value is None else str(value)


def format_state(state: str, reason: str | None = None) -> Text:
    """`stopped (rapid_fail)`, colored by how well the pool is."""
    label = f"{state} ({reason})" if reason else state
    return Text(label, style=STATE_COLORS.get(state, ""))


def format_uptime(seconds: float | None) -> str:
    """`45s`, `12m05s`, `3h07m`, `2d04h`: two units at most, like `ps` etimes."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return NONE
    if seconds < 60:
        return f"{int(seconds)}s"
    return format_age(seconds)


def format_elapsed(seconds: float | None) -> str:
    """A request's age: `0.25s`, `12.3s`, then as `format_uptime`."""
    return format_age(seconds)


def format_bytes(size: int | None) -> str:
    """Memory as `ps`-minded people read it: `812KiB`, `45.2MiB`, `1.50GiB`."""
    if size is None:
        return NONE
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.2f}{unit}" if value < 10 else f"{value:.1f}{unit}"
    return f"{size}B"


def format_percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}%"


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A plain table, kubectl-style: upper-case headers, no borders (greppable)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    return table


def format_pools(pools: list[dict[str, Any]]) -> RenderableType:
    """`poolwarden pools`: one row per pool."""
    if not pools:
        return Text("no pools")
    columns = ("POOL", "STATE", "WORKERS", "QUEUE", "REQUESTS", "LAST EVENT")
    table = _table(*columns, right=("WORKERS", "QUEUE", "REQUESTS"))
    for pool in pools:
        table.add_row(
            _text(pool.get("name")),
            format_state(str(pool.get("state")), pool.get("reason")),
            _text(pool.get("workers")),
            _text(pool.get("queue")),
            _text(pool.get("requests_served")),
            _text(pool.get("last_event")),
        )
    return table


def format_pool_action(action: str, pool: dict[str, Any]) -> str:
    """What a pool action did: `web: stopped (0 workers)` when the pool got
    there before the server answered, else `web: stop requested; now
    stopping (administrator), 1 worker` (the rest happens in the background)."""
    name, state, workers = pool.get("name"), pool.get("state"), pool.get("workers")
    count = f"{workers} worker{'' if workers == 1 else 's'}"
    past, end_state = ACTION_DONE.get(action, (action, None))
    if state == end_state:
        return f"{name}: {past} ({count})"
    reason = f" ({pool['reason']})" if pool.get("reason") else ""
    return f"{name}: {action} requested; now {state}{reason}, {count}"


def format_workers(workers: list[dict[str, Any]]) -> RenderableType:
    """`poolwarden wp`: one row per worker process."""
    if not workers:
        return Text("no worker processes")
    columns = ("PID", "POOL", "STATE", "UPTIME", "REQUESTS", "ACTIVE", "RSS", "CPU")
    table = _table(*columns, right=("PID", "UPTIME", "REQUESTS", "ACTIVE", "RSS", "CPU"))
    for worker in workers:
        pid, python_pid = worker.get("pid"), worker.get("python_pid")
        wrapped = f" (python {python_pid})" if python_pid and python_pid != pid else ""
        table.add_row(
            _text(pid) + wrapped,
            _text(worker.get("pool")),
            format_state(str(worker.get("state"))),
            format_uptime(worker.get("uptime")),
            _text(worker.get("requests_served")),
            _text(worker.get("active_requests")),
            format_bytes(worker.get("rss")),
            format_percent(worker.get("cpu_percent")),
        )
    return table


def format_requests(requests: list[dict[str, Any]], min_elapsed: float = 0.0) -> RenderableType:
    """`poolwarden requests`: one row per request in flight, oldest first."""
    if not requests:
        older = f" older than {format_elapsed(min_elapsed)}" if min_elapsed > 0 else ""
        return Text(f"no requests in flight{older}")
    columns = ("PID", "POOL", "METHOD", "PATH", "CLIENT", "ELAPSED", "PHASE")
    table = _table(*columns, right=("PID", "ELAPSED"))
    table.columns[3].overflow = "fold"
    ordered = sorted(requests, key=lambda r: -float(r.get("elapsed") or 0))
    for request in ordered:
        table.add_row(
            _text(request.get("pid")),
            _text(request.get("pool")),
            _text(request.get("method")),
            Text(_text(request.get("path"))),
            _text(request.get("client")),
            format_elapsed(request.get("elapsed")),
            _text(request.get("phase")),
        )
    return table


def format_health(health: dict[str, Any]) -> str:
    """`status: degraded` and each pool's state, one per line."""
    lines = [f"status: {health.get('status')}"]
    pools = health.get("pools")
    if isinstance(pools, dict):
        width = max((len(name) for name in pools), default=0)
        lines += [f"  {name:<{width}}  {state}" for name, state in pools.items()]
    return "\n".join(lines)


def format_reload(diff: dict[str, Any]) -> str:
    """What a reload did to the pools, one line per kind of change (and new listeners)."""
    lines = ["configuration reloaded"]
    for key in ("added", "removed", "changed", "unchanged"):
        names = diff.get(key) or []
        lines.append(f"  {key + ':':<10} {', '.join(map(str, names)) if names else NONE}")
    if diff.get("bindings_opened"):
        lines.append(f"  {'opened:':<10} {', '.join(map(str, diff['bindings_opened']))}")
    return "\n".join(lines)


def format_issues(issues: list[dict[str, Any]] | list[ConfigIssue]) -> str:
    """Every issue as `path: message`, one per line (as `config check` prints them)."""
    lines = []
    for issue in issues:
        if isinstance(issue, ConfigIssue):
            lines.append(str(issue))
        else:
            path, message = issue.get("path") or "", issue.get("message") or ""
            lines.append(f"{path}: {message}" if path else str(message))
    return "\n".join(lines)


def format_worker_stack(worker: dict[str, Any]) -> str:
    """`poolwarden stack`: one worker's header, its threads (and ASGI tasks) as
    the server rendered them, then its native stacks if they were asked for."""
    interface = worker.get("interface") or "not ready yet"
    header = f"==> pool {worker.get('pool')}, worker {worker.get('pid')} ({interface}) <=="
    text = f"{header}\n{worker.get('text') or ''}"
    native = worker.get("native")
    if isinstance(native, dict) and native.get("command"):
        text += "\n" + format_native(native)
    return text


def format_native(native: dict[str, Any]) -> str:
    """What `py-spy dump --native` printed for one worker, or why it failed."""
    title = f"Native stacks ({native.get('command')})"
    if native.get("ok"):
        return f"{title}:\n{native.get('output') or ''}"
    lines = [f"{title} failed: {native.get('error')}"]
    if native.get("hint"):
        lines.append(f"hint: {native['hint']}")
    return "\n".join(lines) + "\n"


def format_stacks(workers: list[dict[str, Any]], pool: str | None = None) -> str:
    """Every worker's block, a blank line apart; a pool without workers says so."""
    if not workers:
        return f"no worker processes in pool {pool}\n"
    return "\n".join(format_worker_stack(worker) for worker in workers)


def native_missing(workers: list[dict[str, Any]]) -> bool:
    """True when native stacks were asked for and py-spy is not installed."""
    return any(
        isinstance(worker.get("native"), dict) and worker["native"].get("command") is None
        for worker in workers
    )


def format_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def format_config_toml(document: Mapping[str, Any]) -> str:
    """The running config as TOML that `config check` accepts again.

    Durations are seconds and sizes bytes (the server's units); keys whose
    value is unset (null) are written as comments, since TOML has no null.
    """
    lines: list[str] = []
    _emit_table(lines, [], document, header=False)
    return "\n".join(lines).strip() + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_table(item) for item in value)


def _emit_table(lines: list[str], path: list[str], table: Mapping[str, Any], header: bool) -> None:
    own = [(key, value) for key, value in table.items() if not _is_nested(value)]
    if header and own:
        lines += ["", f"[{'.'.join(_toml_key(part) for part in path)}]"]
    for key, value in own:
        if value is None:
            lines.append(f"# {_toml_key(key)}: not set")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if _is_table(value):
            _emit_table(lines, [*path, key], value, header=True)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{'.'.join(_toml_key(part) for part in [*path, key])}]]"]
                _emit_table(lines, [*path, key], item, header=False)


def _is_nested(value: Any) -> bool:
    return _is_table(value) or _is_table_array(value)


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return _toml_string(key)


_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return _toml_string(str(value))


# --- printing (thin) -----------------------------------------------------------------


def _console() -> Console:
    """A console on the current stdout (click's runner swaps it in tests)."""
    return Console(highlight=False, soft_wrap=False)


def print_renderable(renderable: RenderableType) -> None:
    _console().print(renderable)


def print_json(data: Any) -> None:
    click.echo(format_json(data))


def fail(message: str, details: str = "") -> NoReturn:
    """`poolwarden: MESSAGE` (and detail lines) on stderr; exit 1."""
    click.echo(f"poolwarden: {message}", err=True)
    if details:
        click.echo(details, err=True)
    raise click.exceptions.Exit(1)


def _fail_for(error: ControlClientError) -> NoReturn:
    if isinstance(error, ControlError) and error.issues:
        fail(str(error), format_issues(error.issues))
    fail(str(error))


def ask(client: ControlClient, method: str, path: str, *, timeout: float | None = None) -> Any:
    """The server's JSON answer to `method path`; a refusal, or no server
    answering, ends the command with its message (exit 1)."""
    try:
        return client.request(method, path, timeout=timeout).raise_for_error()
    except ControlClientError as error:
        _fail_for(error)


# --- options shared by the commands ---------------------------------------------------


def server_options(function: F) -> F:
    """`--state-dir`, `-c/--config` and `--json`, which every server command takes."""
    function = click.option(
        "--json", "as_json", is_flag=True, help="Print the server's JSON answer as it came."
    )(function)
    return location_options(function)


def location_options(function: F) -> F:
    """`--state-dir` and `-c/--config`: which server (or state directory) is meant."""
    function = click.option(
        "-c",
        "--config",
        "config_file",
        metavar="FILE",
        default=None,
        help="Find the server by this config file's server.state_dir.  "
        "[default: $POOLWARDEN_CONFIG]",
    )(function)
    function = click.option(
        "--state-dir",
        metavar="DIR",
        default=None,
        help="The server's state directory.  [default: .poolwarden, or $POOLWARDEN_STATE_DIR]",
    )(function)
    return function


def connect(state_dir: str | None, config_file: str | None) -> ControlClient:
    """The client for the server the options name; exits on a usage error."""
    if state_dir and config_file:
        raise click.UsageError("give --state-dir or --config, not both")
    try:
        return ControlClient(locate_state_dir(state_dir, config_file, os.environ))
    except StateDirError as error:
        fail(str(error), format_issues(error.issues))


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def native_stack(py_spy: str | None, pid: int) -> dict[str, Any]:
    """`py-spy dump --native --pid PID` of one worker: {"command", "ok",
    "output", "error", "hint"}; `command` is None when py-spy is not installed."""
    if py_spy is None:
        return {
            "command": None,
            "ok": False,
            "output": "",
            "error": "py-spy is not installed (not on PATH)",
            "hint": f"install it with: {PY_SPY_INSTALL}",
        }
    command = [py_spy, "dump", "--native", "--pid", str(pid)]
    shown = f"py-spy dump --native --pid {pid}"
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PY_SPY_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        error, hint = f"no answer within {PY_SPY_TIMEOUT:g}s", None
    except OSError as failure:
        error, hint = f"cannot run {py_spy}: {failure.strerror or failure}", None
    else:
        if done.returncode == 0:
            return {
                "command": shown,
                "ok": True,
                "output": done.stdout,
                "error": None,
                "hint": None,
            }
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        error = " ".join(line.strip() for line in said) or f"exit status {done.returncode}"
        hint = PTRACE_HINT
    return {"command": shown, "ok": False, "output": "", "error": error, "hint": hint}


def _native_stacks(workers: list[dict[str, Any]]) -> None:
    """Add each worker's `native` dump, the workers read at the same time."""
    py_spy = shutil.which("py-spy")
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(workers)))) as executor:
        dumps = list(executor.map(lambda w: native_stack(py_spy, int(w["pid"])), workers))
    for worker, dump in zip(workers, dumps, strict=True):
        worker["native"] = dump


def _duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    """`5s`, `1m30s`, `0.5` (seconds), read by `poolwarden.units.parse_duration`."""
    if value is None:
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


# --- the commands ----------------------------------------------------------------------


@click.command("pools", short_help="List the application pools and their state.")
@server_options
def pools_command(state_dir: str | None, config_file: str | None, as_json: bool) -> None:
    """List the application pools: state (and why), workers, queue, requests."""
    client = connect(state_dir, config_file)
    body = ask(client, "GET", "/v1/pools")
    if as_json:
        print_json(body)
    else:
        print_renderable(format_pools(body["pools"]))


@click.group("pool")
def pool_group() -> None:
    """Start, stop or recycle one application pool."""


def _pool_action_command(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text, short_help=help_text.split(":")[0].split(" (")[0] + ".")
    @click.argument("name")
    @server_options
    def command(name: str, state_dir: str | None, config_file: str | None, as_json: bool) -> None:
        client = connect(state_dir, config_file)
        body = ask(client, "POST", f"/v1/pools/{_quote(name)}/{action}", timeout=ACTION_TIMEOUT)
        if as_json:
            print_json(body)
        else:
            click.echo(format_pool_action(action, body))

    return command


pool_group.add_command(
    _pool_action_command("start", "Start pool NAME (and its workers, if always running).")
)
pool_group.add_command(
    _pool_action_command(
        "stop",
        "Stop pool NAME: its workers finish their requests (up to the shutdown time limit) "
        "and exit; new requests get 503.",
    )
)
pool_group.add_command(
    _pool_action_command(
        "recycle",
        "Recycle pool NAME: start new workers, then drain the old ones (overlapping).",
    )
)


@click.group("wp", invoke_without_command=True, short_help="List the worker processes.")
@click.option("--pool", metavar="NAME", default=None, help="Only this pool's workers.")
@server_options
@click.pass_context
def wp_command(
    ctx: click.Context,
    pool: str | None,
    state_dir: str | None,
    config_file: str | None,
    as_json: bool,
) -> None:
    """List the worker processes: pid, pool, state, uptime, requests, memory, CPU.

    A worker kept stopped for inspection (`rapid_fail.orphan_worker`) is
    listed as `orphaned`; `poolwarden wp reap PID` ends it."""
    if ctx.invoked_subcommand is not None:
        return
    client = connect(state_dir, config_file)
    query = f"?pool={_quote(pool)}" if pool else ""
    body = ask(client, "GET", f"/v1/workers{query}")
    if as_json:
        print_json(body)
    else:
        print_renderable(format_workers(body["workers"]))


@wp_command.command("reap", short_help="End an orphaned worker.")
@click.argument("pid", type=int)
@server_options
def wp_reap_command(
    pid: int, state_dir: str | None, config_file: str | None, as_json: bool
) -> None:
    """End worker PID, kept stopped for inspection as an orphan (SIGKILL)."""
    client = connect(state_dir, config_file)
    body = ask(client, "POST", f"/v1/workers/{pid}/reap")
    if as_json:
        print_json(body)
    else:
        print(f"worker {pid} of pool {body['pool']!r} reaped")


@click.command("requests", short_help="List the requests in flight.")
@click.option("--pool", metavar="NAME", default=None, help="Only this pool's requests.")
@click.option(
    "--elapsed",
    "min_elapsed",
    default=None,
    callback=_duration_option,
    metavar="DURATION",
    help='Only requests running at least this long ("5s", "1m").  [default: all]',
)
@server_options
def requests_command(
    pool: str | None,
    min_elapsed: float,
    state_dir: str | None,
    config_file: str | None,
    as_json: bool,
) -> None:
    """List the requests in flight: worker, method, path, client, elapsed time, phase."""
    client = connect(state_dir, config_file)
    params = {"pool": pool} if pool else {}
    if min_elapsed:
        params["min_elapsed"] = repr(min_elapsed)
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    body = ask(client, "GET", f"/v1/requests{query}")
    if as_json:
        print_json(body)
    else:
        print_renderable(format_requests(body["requests"], min_elapsed))


@click.command("stack", short_help="Print the stacks of a worker, or of a pool's workers.")
@click.argument("target", metavar="PID|POOL")
@click.option(
    "--native",
    is_flag=True,
    help="Also print native (C) frames with `py-spy dump --native` (py-spy on PATH, "
    "ptrace permission).",
)
@server_options
def stack_command(
    target: str, native: bool, state_dir: str | None, config_file: str | None, as_json: bool
) -> None:
    """Print every thread's stack of worker PID, or of each worker of pool POOL.

    Each thread in Python's traceback layout, oldest call first, with its
    source lines; a thread serving a request is titled with it. An ASGI
    worker also shows its pending tasks and where each waits. Works on a
    worker stuck in C code holding the GIL (the stacks come from
    faulthandler, in a signal handler); on Python 3.14+ they come through
    sys.remote_exec where it can work, and --json says which way (`via`).
    """
    client = connect(state_dir, config_file)
    by_pid = target.isascii() and target.isdigit()
    path = f"/v1/workers/{target}/stack" if by_pid else f"/v1/pools/{_quote(target)}/stack"
    body = ask(client, "GET", path)
    workers: list[dict[str, Any]] = [body] if by_pid else body["workers"]
    if native:
        _native_stacks(workers)
    if as_json:
        print_json(body)
        return
    click.echo(format_stacks(workers, None if by_pid else target), nl=False)
    if native and native_missing(workers):
        click.echo(
            f"\nNative stacks: py-spy is not installed (not on PATH). Install it with "
            f"`{PY_SPY_INSTALL}` and run this command again with --native."
        )


@click.command("health", short_help="Is the server ready? Exit 0 if so.")
@server_options
def health_command(state_dir: str | None, config_file: str | None, as_json: bool) -> None:
    """Is the server ready? Prints the status and each pool's state; exit 0 if ok, else 1."""
    client = connect(state_dir, config_file)
    try:
        response = client.request("GET", "/v1/health")
        body = response.body if response.status == 503 else response.raise_for_error()
    except ControlClientError as error:
        _fail_for(error)
    if as_json:
        print_json(body)
    else:
        click.echo(format_health(body))
    if not isinstance(body, dict) or body.get("status") != "ok":
        raise click.exceptions.Exit(1)


@click.group("config")
def config_group() -> None:
    """Show, reload or check the configuration."""


@config_group.command("show", short_help="Print the running configuration.")
@server_options
def config_show_command(state_dir: str | None, config_file: str | None, as_json: bool) -> None:
    """Print the running configuration (defaults filled in, paths absolute) as TOML."""
    client = connect(state_dir, config_file)
    body = ask(client, "GET", "/v1/config")
    if as_json:
        print_json(body)
    else:
        click.echo(format_config_toml(body), nl=False)


@config_group.command("reload", short_help="Apply the config file again.")
@server_options
def config_reload_command(state_dir: str | None, config_file: str | None, as_json: bool) -> None:
    """Read the config file again and apply it; print which pools changed.

    An invalid file changes nothing: every mistake is printed and the
    command exits 1.
    """
    client = connect(state_dir, config_file)
    body = ask(client, "POST", "/v1/config/reload", timeout=ACTION_TIMEOUT)
    if as_json:
        print_json(body)
    else:
        click.echo(format_reload(body))


@config_group.command("check", short_help="Check a config file (no server needed).")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def config_check_command(file: str, as_json: bool) -> None:
    """Check config FILE without a server: `FILE: OK`, or every mistake (exit 1)."""
    try:
        config = load_config(file)
    except ConfigError as error:
        if as_json:
            print_json(_check_result(file, error.errors, []))
        else:
            click.echo(format_issues(error.errors))
        raise click.exceptions.Exit(1) from None
    config = dataclasses.replace(config, warnings=config.warnings + _core_dump_warnings(config))
    if as_json:
        print_json(_check_result(file, [], config.warnings))
        return
    click.echo(f"{file}: OK")
    for warning in config.warnings:
        click.echo(f"warning: {warning}")


def _core_dump_warnings(config: Config) -> list[ConfigIssue]:
    """Pools with `core_dumps = true` on a machine whose cores go elsewhere."""
    wanted = [name for name, pool in config.pools.items() if pool.core_dumps]
    why = core_dumps.system_warning() if wanted else None
    if why is None:
        return []
    return [
        ConfigIssue(f"pools.{name}.core_dumps", f"core_dumps is on but {why}") for name in wanted
    ]


def _check_result(file: str, issues: list[ConfigIssue], warnings: list[ConfigIssue]) -> Any:
    def plain(items: list[ConfigIssue]) -> list[dict[str, str]]:
        return [{"path": item.path, "message": item.message} for item in items]

    return {"file": file, "ok": not issues, "issues": plain(issues), "warnings": plain(warnings)}


COMMANDS: list[click.Command] = [
    pools_command,
    pool_group,
    wp_command,
    requests_command,
    stack_command,
    config_group,
    health_command,
]


def register(main: click.Group) -> None:
    """Add the admin commands to `main`; a name already taken is a ValueError."""
    for command in COMMANDS:
        assert command.name is not None
        if command.name in main.commands:
            raise ValueError(f"the command {command.name!r} is already defined")
        main.add_command(command)
