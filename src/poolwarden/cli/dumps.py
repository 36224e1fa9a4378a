"""`poolwarden dumps`: the core files of crashed workers, and how to open each.

    poolwarden dumps [--json] [--state-dir DIR | -c FILE]
        │ locate the state directory as `poolwarden events` does (common)
        ▼
    STATE_DIR/dumps/POOL-PID.core ─┐  (moved there by the master; `core_dumps = true`)
    STATE_DIR/events.db ───────────┼─▶ find_dumps: each file, the worker-end event
                                   │   that names it, the pool's interpreter (from
                                   │   the worker-start event of that pid)
                                   ▼
    format_dumps (pure, plain text) ──▶ stdout

Works whether or not the server runs. `--json` prints one JSON object per
line. Exit status: 0 (also when there are none), 1 when the state directory
cannot be found, 2 a usage error.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Sequence

import click
import msgspec

from poolwarden.cli.common import add_commands, location_options, state_dir_of_group
from poolwarden.events import catalog
from poolwarden.events.render import format_bytes, format_time
from poolwarden.events.store import Event, EventLogError, EventStore
from poolwarden.master.core_dumps import DUMPS_DIR, PARTIAL_SUFFIX, parse_dump_name

MATCH_SLACK = 60.0
"""Seconds between a worker-end event and its core file's time within which
an event that does not name the file (an older server) is taken as its."""


class Dump(msgspec.Struct, frozen=True, kw_only=True):
    """One collected core file and what is known about it."""

    path: str
    pool: str
    pid: int
    time: float
    """When the kernel wrote it (the file's modification time)."""
    size: int
    event_seq: int | None
    """The worker-end event that produced it (`poolwarden events show SEQ`)."""
    event_id: int | None
    message: str | None
    python: str
    """The pool's interpreter (from the worker's start event), else this one."""
    gdb: str
    """The command that opens it."""


# --- finding them ------------------------------------------------------------------------


def find_dumps(state_dir: str, store: EventStore | None) -> tuple[list[Dump], int]:
    """The dumps of `state_dir`, oldest first, and how many are still being copied."""
    directory = os.path.join(state_dir, DUMPS_DIR)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return [], 0
    copying = sum(1 for name in names if name.endswith(PARTIAL_SUFFIX))
    events: dict[str, list[Event]] = {}
    dumps = []
    for name in names:
        parsed = parse_dump_name(name)
        path = os.path.abspath(os.path.join(directory, name))
        try:
            info = os.stat(path)
        except OSError:
            continue
        if parsed is None or not stat.S_ISREG(info.st_mode):
            continue
        pool, pid = parsed
        if store is not None and pool not in events:
            events[pool] = store.query(pool=pool)
        mine = [event for event in events.get(pool, []) if event.pid == pid]
        ended = _end_event(mine, name, info.st_mtime)
        python = _python(mine, ended)
        dumps.append(
            Dump(
                path=path,
                pool=pool,
                pid=pid,
                time=info.st_mtime,
                size=info.st_size,
                event_seq=ended.seq if ended else None,
                event_id=ended.event_id if ended else None,
                message=ended.message if ended else None,
                python=python,
                gdb=shlex.join(["gdb", python, path]),
            )
        )
    dumps.sort(key=lambda dump: dump.time)
    return dumps, copying


def _end_event(events: Sequence[Event], name: str, written: float) -> Event | None:
    """The event naming the file; else the worker-end event of that pid
    nearest the file's time (pids are reused, so never one far from it)."""
    for event in reversed(events):
        named = event.details.get("core_dump")
        if isinstance(named, str) and os.path.basename(named) == name:
            return event
    ends = [
        event
        for event in events
        if "who" in event.details and abs(event.time - written) <= MATCH_SLACK
    ]
    return min(ends, key=lambda event: abs(event.time - written), default=None)


def _python(events: Sequence[Event], ended: Event | None) -> str:
    """The interpreter the worker ran: its start event says (the last one before its end)."""
    started = [
        event
        for event in events
        if event.event_id == catalog.WORKER_STARTED
        and (ended is None or event.seq < ended.seq)
        and isinstance(event.details.get("python"), str)
    ]
    return str(started[-1].details["python"]) if started else sys.executable


# --- formatting (pure) -------------------------------------------------------------------

DUMP_COLUMNS = f"{'TIME':<19}  {'SIZE':>8}  {'POOL':<12}  {'PID':>7}  {'EVENT':>6}  FILE"


def format_dumps(dumps: Sequence[Dump], directory: str, copying: int = 0) -> str:
    """`poolwarden dumps`: one line per core and the command to open it."""
    lines: list[str] = []
    if not dumps:
        lines += [
            f"no core dumps in {directory}",
            "To collect them, set `core_dumps = true` in the pool's [pools.NAME] table of the",
            "config file; `poolwarden config check FILE` says whether this machine's",
            "core_pattern lets poolwarden pick them up.",
        ]
    else:
        lines.append(DUMP_COLUMNS)
        for dump in dumps:
            event = f"#{dump.event_seq}" if dump.event_seq is not None else "-"
            lines.append(
                f"{format_time(dump.time):<19}  {format_bytes(dump.size):>8}  "
                f"{dump.pool:<12}  {dump.pid:>7}  {event:>6}  {dump.path}"
            )
            if dump.message:
                lines.append(f"    {dump.message}")
            lines.append(f"    open it: {dump.gdb}")
    if copying:
        plural = "s are" if copying != 1 else " is"
        lines.append(f"({copying} more core{plural} still being copied into {directory})")
    return "\n".join(lines)


# --- the command -------------------------------------------------------------------------


@click.command("dumps", short_help="List the core dumps of crashed workers (no server needed).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@location_options
@click.pass_context
def dumps_command(
    ctx: click.Context, as_json: bool, state_dir: str | None, config_file: str | None
) -> None:
    """List the core files in STATE_DIR/dumps: when each was written, its size,
    pool and pid, the event of the crash that produced it, and the gdb command
    that opens it. Pools write them with `core_dumps = true`."""
    directory = state_dir_of_group(ctx, state_dir, config_file)
    try:
        store: EventStore | None = EventStore.open_reader(directory)
    except (EventLogError, FileNotFoundError):
        store = None  # the files are still worth listing
    try:
        dumps, copying = find_dumps(directory, store)
    finally:
        if store is not None:
            store.close()
    if as_json:
        for dump in dumps:
            click.echo(msgspec.json.encode(dump).decode())
        return
    click.echo(format_dumps(dumps, os.path.join(directory, DUMPS_DIR), copying))


def register(main: click.Group) -> None:
    """Add `poolwarden dumps` to `main`; a name already taken is a ValueError."""
    add_commands(main, [dumps_command])
