"""`poolwarden debug`: break into a worker, or make a pool's next worker
wait for a debugger before it loads the app (IIS's Image File Execution
Options `Debugger` value, and `windbg -p PID`)."""

from __future__ import annotations

import os
import shlex
import time
from typing import Any

import click

from poolwarden.cli.common import (
    add_commands,
    ask,
    connect,
    fail,
    fail_for,
    print_json,
    server_options,
    url_segment,
)
from poolwarden.control_client import ControlClient, ControlClientError

WAIT_FOR_WORKER = 120.0
"""Seconds `debug connect` waits for a worker to start listening."""
WAIT_FOR_DEBUGPY = 10.0
"""Seconds `debug startup --adapter debugpy` waits to print the worker's port."""


@click.group("debug", short_help="Debug a worker: attach, or start the next one under pdb.")
def debug_group() -> None:
    """Debug workers: `startup` arms a pool so that its next worker waits for
    a debugger before it loads the app; `connect` opens the session;
    `attach` breaks into a running worker; `off` and `status`."""


@debug_group.command("startup", short_help="The pool's next worker waits for a debugger.")
@click.argument("pool")
@click.option(
    "--adapter",
    type=click.Choice(["pdb", "debugpy"]),
    help="The debug server the worker opens before it loads the app  [default: pdb, "
    "none with --wrapper alone]",
)
@click.option(
    "--wrapper",
    metavar="COMMAND",
    help='Start the worker under this command, e.g. "gdb -batch -ex run -ex bt --args" '
    "(py-spy record, strace, valgrind); its output is captured like the worker's.",
)
@click.option("--keep", is_flag=True, help="Every next worker, until `debug off` (default: one).")
@click.option("--start", is_flag=True, help="Start the pool first if it is disabled or stopped.")
@click.option(
    "--wait",
    default=WAIT_FOR_DEBUGPY,
    show_default=True,
    help="debugpy: seconds to wait for the worker's port, to print it.",
)
@server_options
def startup_command(
    pool: str,
    adapter: str | None,
    wrapper: str | None,
    keep: bool,
    start: bool,
    wait: float,
    state_dir: str | None,
    config_file: str | None,
    as_json: bool,
) -> None:
    """Arm start-up debugging of POOL. An always-running pool starts that
    worker at once; an on-demand pool with the next request. While it waits
    or is debugged, its start-up time limit and pings are suspended and its
    failures do not count toward rapid-fail protection."""
    words = _wrapper_words(wrapper)
    if adapter is None and not words:
        adapter = "pdb"
    client = connect(state_dir, config_file)
    query = f"?adapter={adapter or ''}&keep={int(keep)}&start={int(start)}"
    if words:
        query += f"&wrapper={url_segment(shlex.join(words))}"
    try:
        body = client.post(f"/v1/pools/{url_segment(pool)}/debug{query}")
    except ControlClientError as error:
        if "disabled by rapid-fail protection" in str(error):
            fail(f"{error}", f"Run: poolwarden debug startup {pool} --start")
        fail_for(error)
    if as_json:
        print_json(body)
        return
    how = [f"starts under `{shlex.join(words)}`"] if words else []
    if adapter:
        how.append(f"waits for {adapter} before it loads the app")
    click.echo(
        f"pool {pool!r}: the next worker {' and '.join(how)}"
        + (" (every next worker, until `poolwarden debug off`)" if keep else "")
    )
    if adapter == "pdb":
        click.echo(f"connect with: poolwarden debug connect {pool}")
    elif adapter == "debugpy":
        # The port is the worker's to pick: an always-running pool's worker
        # starts now, so wait a little and print it.
        deadline = time.monotonic() + wait
        while True:
            listening = _find_listener(ask(client, "GET", "/v1/debug"), pool, ("debugpy",))
            if listening is not None:
                click.echo(_debugpy_how_to(listening))
                break
            if time.monotonic() >= deadline:
                click.echo(
                    "its port is printed by `poolwarden debug connect "
                    f"{pool}` once the worker listens (an on-demand pool starts it with the "
                    "next request)"
                )
                break
            time.sleep(0.1)
    else:
        click.echo("its output goes to the server's log, prefixed with the pool and its pid")


def _debugpy_how_to(worker: dict[str, Any]) -> str:
    host, _, port = str(worker["address"]).rpartition(":")
    return (
        f"worker {worker['pid']} waits for a debugpy client on {worker['address']}: "
        f'attach your editor there (VS Code: "Python Debugger: Attach", host {host}, '
        f"port {port}); the app loads once it is attached"
    )


def _wrapper_words(wrapper: str | None) -> list[str]:
    """The wrapper's command line, split as a shell would; a relative path
    to its program is made absolute here, since the server's working
    directory is not this one."""
    if wrapper is None:
        return []
    try:
        words = shlex.split(wrapper)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--wrapper") from None
    if not words:
        raise click.BadParameter("an empty command", param_hint="--wrapper")
    if "/" in words[0]:
        words[0] = os.path.abspath(os.path.expanduser(words[0]))
    return words


@debug_group.command("connect", short_help="Open the debug session of a pool or worker.")
@click.argument("target")
@click.option(
    "--wait", default=WAIT_FOR_WORKER, show_default=True, help="Seconds to wait for a worker."
)
@server_options
def connect_command(
    target: str, wait: float, state_dir: str | None, config_file: str | None, as_json: bool
) -> None:
    """Connect to the pdb server of TARGET (a pool name or a worker pid): line
    editing, Ctrl-C interrupts the program, Ctrl-D detaches and lets it run."""
    from poolwarden.debug_client import connect as debug_session

    client = connect(state_dir, config_file)
    waiting = _wait_for_listener(client, target, wait, ("pdb", "debugpy"))
    if waiting["adapter"] == "debugpy":
        click.echo(_debugpy_how_to(waiting))  # an editor's session, not a terminal's
        return
    click.echo(f"debugging worker {waiting['pid']} at {waiting['address']}", err=True)
    raise click.exceptions.Exit(debug_session(waiting["address"], pid=waiting["python_pid"]))


@debug_group.command("attach", short_help="Break into a running worker.")
@click.argument("pid", type=int)
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for the worker.")
@server_options
def attach_command(
    pid: int, wait: float, state_dir: str | None, config_file: str | None, as_json: bool
) -> None:
    """Make worker PID open a pdb server and stop its main thread, then
    connect; other workers keep serving."""
    from poolwarden.debug_client import connect as debug_session

    client = connect(state_dir, config_file)
    ask(client, "POST", f"/v1/workers/{pid}/attach")
    waiting = _wait_for_listener(client, str(pid), wait)
    click.echo(f"attached to worker {pid} at {waiting['address']}", err=True)
    raise click.exceptions.Exit(debug_session(waiting["address"], pid=waiting["python_pid"]))


@debug_group.command("off", short_help="Disarm start-up debugging of a pool.")
@click.argument("pool")
@server_options
def off_command(pool: str, state_dir: str | None, config_file: str | None, as_json: bool) -> None:
    client = connect(state_dir, config_file)
    body = ask(client, "POST", f"/v1/pools/{url_segment(pool)}/debug/off")
    if as_json:
        print_json(body)
    else:
        click.echo(f"pool {pool!r}: start-up debugging is off")


@debug_group.command("status", short_help="What is armed, who is waiting, since when.")
@server_options
def status_command(state_dir: str | None, config_file: str | None, as_json: bool) -> None:
    client = connect(state_dir, config_file)
    body = ask(client, "GET", "/v1/debug")
    if as_json:
        print_json(body)
        return
    lines = []
    for pool in body["pools"]:
        armed = pool["armed"]
        if armed:
            what = [armed["adapter"]] if armed["adapter"] else []
            if armed.get("wrapper"):
                what.append(f"under `{shlex.join(armed['wrapper'])}`")
            lines.append(
                f"{pool['pool']}: armed ({', '.join(what)}"
                + (", kept" if armed["keep"] else ", one worker")
                + f") since {_clock(armed['since'])}"
            )
        for worker in pool["workers"]:
            if worker["adapter"] == "wrapper":
                held = f"started under `{shlex.join(worker['wrapper'] or [])}`"
            else:
                held = (
                    f"held by {worker['adapter']} at {worker['address'] or '(not listening yet)'}"
                )
            lines.append(
                f"{pool['pool']}: worker {worker['pid']} ({worker['state']}) {held} "
                f"since {_clock(worker['since'])}"
            )
    click.echo("\n".join(lines) if lines else "no debugging armed, no worker debugged")


def _clock(stamp: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _find_listener(
    body: dict[str, Any], target: str, adapters: tuple[str, ...]
) -> dict[str, Any] | None:
    """The first worker of pool (or with pid) `target` listening for one of
    `adapters`, in a `GET /v1/debug` answer."""
    for pool in body["pools"]:
        for worker in pool["workers"]:
            matches = str(worker["pid"]) == target or pool["pool"] == target
            if matches and worker["address"] and worker["adapter"] in adapters:
                return dict(worker)
    return None


def _wait_for_listener(
    client: ControlClient, target: str, wait: float, adapters: tuple[str, ...] = ("pdb",)
) -> dict[str, Any]:
    """The first worker of pool (or with pid) `target` that listens for a debugger."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        body = ask(client, "GET", "/v1/debug")
        pools = [p["pool"] for p in body["pools"]]
        if not target.isdigit() and target not in pools:
            fail(f"no pool named {target!r}")
        found = _find_listener(body, target, adapters)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            fail(
                f"no worker of {target!r} waits for a debugger after {wait:g}s",
                "Arm it with `poolwarden debug startup POOL` (an on-demand pool starts "
                "its worker with the next request).",
            )
        if not told:
            click.echo(f"waiting for a worker of {target!r} to wait for a debugger…", err=True)
            told = True
        time.sleep(0.1)


def register(main: click.Group) -> None:
    """Add `poolwarden debug` to `main`; a name already taken is a ValueError."""
    add_commands(main, [debug_group])
