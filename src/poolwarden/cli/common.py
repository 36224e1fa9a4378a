"""What every command group of the command line shares.

    --state-dir DIR | -c FILE | $POOLWARDEN_CONFIG | $POOLWARDEN_STATE_DIR | .poolwarden
        │ locate_state_dir (which server, which event log)
        ├─▶ connect ──▶ ControlClient ──▶ ask(client, method, path) ──▶ JSON
        │                                  │ a refusal, or no server: fail (exit 1)
        └─▶ the state directory itself (events, dumps: read with no server)

    format_* (pure, in each group's module) ──▶ print_renderable / print_json ──▶ stdout

The command modules (`serve`, `admin`, `events`, `dumps`, `debug`) import
this module and never each other, so each group can change on its own; a
helper two groups need belongs here. Errors end a command one way: `fail`
prints `poolwarden: MESSAGE` on stderr and exits 1 (click exits 2 for a
usage error).
"""

from __future__ import annotations

import json
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import click
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from poolwarden.config import ConfigError, ConfigIssue, load_config
from poolwarden.control_client import ControlClient, ControlClientError, ControlError
from poolwarden.settings import DEFAULT_STATE_DIR, default_state_dir

F = TypeVar("F", bound=Callable[..., Any])

NONE = "-"
"""What a table shows for a value the server does not know (None)."""


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


def state_dir_from_options(state_dir: str | None, config_file: str | None) -> str:
    """The state directory the options name; exits on a usage error or an
    unreadable config file."""
    if state_dir and config_file:
        raise click.UsageError("give --state-dir or --config, not both")
    try:
        return locate_state_dir(state_dir, config_file, os.environ)
    except StateDirError as error:
        fail(str(error), format_issues(error.issues))


def state_dir_of_group(ctx: click.Context, state_dir: str | None, config_file: str | None) -> str:
    """The state directory: the subcommand's options, else its group's
    (`poolwarden events --state-dir D show 7` as well as `... show 7 --state-dir D`)."""
    if state_dir is None and config_file is None and ctx.parent is not None:
        state_dir = ctx.parent.params.get("state_dir")
        config_file = ctx.parent.params.get("config_file")
    return state_dir_from_options(state_dir, config_file)


def connect(state_dir: str | None, config_file: str | None) -> ControlClient:
    """The client for the server the options name; exits on a usage error."""
    return ControlClient(state_dir_from_options(state_dir, config_file))


# --- talking to the server -------------------------------------------------------------


def ask(client: ControlClient, method: str, path: str, *, timeout: float | None = None) -> Any:
    """The server's JSON answer to `method path`; a refusal, or no server
    answering, ends the command with its message (exit 1)."""
    try:
        return client.request(method, path, timeout=timeout).raise_for_error()
    except ControlClientError as error:
        fail_for(error)


def url_segment(name: str) -> str:
    """A pool name as one segment of a control API path (`/`, `?`, spaces quoted)."""
    return urllib.parse.quote(name, safe="")


# --- ending a command ------------------------------------------------------------------


def fail(message: str, details: str = "") -> NoReturn:
    """`poolwarden: MESSAGE` (and detail lines) on stderr; exit 1."""
    click.echo(f"poolwarden: {message}", err=True)
    if details:
        click.echo(details, err=True)
    raise click.exceptions.Exit(1)


def fail_for(error: ControlClientError) -> NoReturn:
    """End the command with a failed control request's message (and, for an
    invalid config, every issue the server found)."""
    if isinstance(error, ControlError) and error.issues:
        fail(str(error), format_issues(error.issues))
    fail(str(error))


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


# --- output ----------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A table cell: the value as text, or `-` when the server does not know it."""
    return NONE if value is None else str(value)


def plain_table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A plain table, kubectl-style: upper-case headers, no borders (greppable)."""
    plain = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        plain.add_column(column, justify="right" if column in right else "left")
    return plain


def format_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def console(*, soft_wrap: bool = False) -> Console:
    """A console on the current stdout (click's runner swaps it in tests);
    `soft_wrap` for lines that must stay whole (event lines), else rich fits
    tables to the terminal."""
    return Console(highlight=False, soft_wrap=soft_wrap)


def print_renderable(renderable: RenderableType) -> None:
    console().print(renderable)


def print_json(data: Any) -> None:
    click.echo(format_json(data))


# --- options shared by the commands ---------------------------------------------------


def state_dir_option(function: F) -> F:
    """`--state-dir` of the commands that start a server, with its default."""
    return click.option(
        "--state-dir",
        default=default_state_dir,
        show_default=".poolwarden, or $POOLWARDEN_STATE_DIR",
        help="Directory for the server's sockets, crash files and event log.",
    )(function)


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


def unused_state_dir(function: F) -> F:
    """`--state-dir` on a command that needs no server or state (the event
    catalog, a config file's check): taken and ignored, so that every command
    takes it in any position and a script can pass it to all of them."""
    return click.option(
        "--state-dir",
        "_state_dir",
        metavar="DIR",
        default=None,
        expose_value=False,
        help="Taken by every command; this one needs no state directory.",
    )(function)


def server_options(function: F) -> F:
    """`--state-dir`, `-c/--config` and `--json`, which every server command takes."""
    function = click.option(
        "--json", "as_json", is_flag=True, help="Print the server's JSON answer as it came."
    )(function)
    return location_options(function)


# --- assembling the command line -------------------------------------------------------


def add_commands(main: click.Group, commands: Sequence[click.Command]) -> None:
    """Add `commands` to `main`; a name already taken is a ValueError (two
    groups defining one name would otherwise hide one silently)."""
    for command in commands:
        assert command.name is not None
        if command.name in main.commands:
            raise ValueError(f"the command {command.name!r} is already defined")
        main.add_command(command)
