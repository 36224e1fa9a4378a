"""The admin commands: IIS's `appcmd` for a running server, over the control API.

    poolwarden pools | pool start NAME | wp | requests | stack | config ... | health
        │ locate the state directory (--state-dir, -c FILE, environment): common
        ▼
    ControlClient ──STATE_DIR/control.sock──▶ master ──▶ JSON
        │
        ▼
    admin_format / config_toml (pure: JSON → text or a rich table) ──▶ print_* ──▶ stdout

`register(main)` adds the commands to the top-level `poolwarden` group.
Every command but `config check` talks to a running server; without one it
prints one line to stderr and exits 1. `--json` prints the server's answer
as it came. Exit status: 0 done (for `health`: the server is ready), 1
anything else (no server, an error answer, an invalid config, not ready), 2
a usage error.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Any

import click

from poolwarden.cli.admin_format import (
    format_health,
    format_pool_action,
    format_pools,
    format_reload,
    format_requests,
    format_stacks,
    format_workers,
    native_missing,
)
from poolwarden.cli.common import (
    add_commands,
    ask,
    connect,
    fail_for,
    format_issues,
    print_json,
    print_renderable,
    server_options,
    unused_state_dir,
    url_segment,
)
from poolwarden.cli.config_toml import format_config_toml
from poolwarden.cli.py_spy import PY_SPY_INSTALL, add_native_stacks
from poolwarden.config import Config, ConfigError, ConfigIssue, load_config
from poolwarden.control_client import ACTION_TIMEOUT, ControlClientError
from poolwarden.master import core_dumps
from poolwarden.units import parse_duration


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
        body = ask(
            client, "POST", f"/v1/pools/{url_segment(name)}/{action}", timeout=ACTION_TIMEOUT
        )
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
    query = f"?pool={url_segment(pool)}" if pool else ""
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
    path = f"/v1/workers/{target}/stack" if by_pid else f"/v1/pools/{url_segment(target)}/stack"
    body = ask(client, "GET", path)
    workers: list[dict[str, Any]] = [body] if by_pid else body["workers"]
    if native:
        add_native_stacks(workers)
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
        fail_for(error)
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
@unused_state_dir
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
    add_commands(main, COMMANDS)
