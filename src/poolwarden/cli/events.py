"""`poolwarden events`: the event log, read straight from the state directory.

    poolwarden events [--pool NAME] [--id N] [--level L] [--since 1h] [-n N]
                      [--follow] [--groups] [--json]
    poolwarden events show SEQ [--json]
    poolwarden events explain [ID | NAME] [--json]
        │ locate the state directory as the admin commands do (common)
        │ (--state-dir, -c FILE, $POOLWARDEN_CONFIG, $POOLWARDEN_STATE_DIR, .poolwarden)
        ▼
    EventStore.open_reader(STATE_DIR): read-only SQLite, no server needed
        ▼
    poolwarden.events.render.format_* (pure, plain text) ──▶ print_* (rich colours) ──▶ stdout

These commands work whether or not the server runs: they read
`STATE_DIR/events.db` (read-only; WAL lets them read while the master
writes). `--json` prints one JSON object per line (the shape of
`events.jsonl`), `show --json` one object. Exit status: 0 done, 1 no event
log, no such event or id, 2 a usage error.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import click
import msgspec
from rich.text import Text

from poolwarden.cli.common import (
    add_commands,
    console,
    fail,
    location_options,
    state_dir_of_group,
    unused_state_dir,
)
from poolwarden.events.catalog import CATALOG, LEVELS, UnknownEventId, explain, lookup
from poolwarden.events.render import (
    EVENT_COLUMNS,
    format_event,
    format_event_line,
    format_events,
    format_groups,
)
from poolwarden.events.store import (
    EVENTS_DB,
    Event,
    EventLogError,
    EventLogMissing,
    EventStore,
    Group,
    encode_json_line,
)
from poolwarden.signals import interruptible
from poolwarden.units import parse_duration

DEFAULT_LIMIT = 100
"""Events a listing shows unless told otherwise (the newest; `-n 0` for all)."""
FOLLOW_POLL = 0.25
"""Seconds between two looks at the log with `--follow`: a new event shows
within a quarter of a second, and an idle follower costs one indexed query."""
LEVEL_STYLES = {"error": "red", "warning": "yellow", "info": ""}


# --- options ----------------------------------------------------------------------------


def _since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A duration back from now (`1h`, `30m`, `2d`), by `poolwarden.units.parse_duration`."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


def open_store(directory: str) -> EventStore:
    """The event log of `directory`, read-only; exits 1 if there is none."""
    try:
        return EventStore.open_reader(directory)
    except EventLogMissing:
        path = os.path.join(directory, EVENTS_DB)
        fail(
            f"no event log at {path}: no server has run with this state directory "
            "(give --state-dir DIR or -c FILE)"
        )
    except EventLogError as error:
        fail(str(error))


# --- printing (thin) ----------------------------------------------------------------------


def print_events(events: Sequence[Event], *, header: bool = True, following: bool = False) -> None:
    """The events, one line each, under a header (`no events` if none, unless
    `following`: then the header alone, as events are still to come)."""
    out = console(soft_wrap=True)
    if header:
        if events or following:
            out.print(Text(EVENT_COLUMNS, style="bold"))
        else:
            out.print(format_events(events))
    for event in events:
        out.print(Text(format_event_line(event), style=LEVEL_STYLES.get(event.level, "")))


def print_groups(groups: Sequence[Group]) -> None:
    out = console(soft_wrap=True)
    for index, line in enumerate(format_groups(groups).splitlines()):
        out.print(Text(line, style="bold" if index == 0 and groups else ""))


def print_event(event: Event) -> None:
    out = console(soft_wrap=True)
    for index, line in enumerate(format_event(event).splitlines()):
        if index == 0:
            style = "bold " + LEVEL_STYLES.get(event.level, "")
        elif line and not line[0].isspace():
            style = "bold"
        else:
            style = ""
        out.print(Text(line, style=style.strip()))


def print_json_lines(items: Sequence[Event] | Sequence[Group]) -> None:
    for item in items:
        if isinstance(item, Event):
            click.echo(encode_json_line(item).decode(), nl=False)
        else:
            click.echo(msgspec.json.encode(item.to_dict()).decode())


def _flush() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


# --- the commands --------------------------------------------------------------------------


@click.group(
    "events",
    invoke_without_command=True,
    short_help="List the event log: why workers died, pool changes (no server needed).",
)
@click.option("--pool", metavar="NAME", default=None, help="Only this pool's events.")
@click.option("--id", "event_id", type=int, metavar="N", default=None, help="Only this event id.")
@click.option(
    "--level",
    type=click.Choice(LEVELS),
    default=None,
    help="Only this level and worse (warning: warnings and errors).  [default: all]",
)
@click.option(
    "--since",
    callback=_since_option,
    metavar="DURATION",
    default=None,
    help='Only events of the last DURATION ("1h", "30m", "2d").  [default: all]',
)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show the newest N events; 0 shows all.",
)
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing new events as they come (Ctrl-C ends)."
)
@click.option(
    "--groups",
    is_flag=True,
    help="List failures grouped by fingerprint, with counts, first and last seen.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@location_options
@click.pass_context
def events_group(
    ctx: click.Context,
    pool: str | None,
    event_id: int | None,
    level: str | None,
    since: float | None,
    limit: int,
    follow: bool,
    groups: bool,
    as_json: bool,
    state_dir: str | None,
    config_file: str | None,
) -> None:
    """List the event log, newest last: every worker start and death (and who
    ended it), every pool change, recycle and reload.

    Reads STATE_DIR/events.db directly, so it works whether or not the server
    runs. `poolwarden events show SEQ` prints one event with its evidence;
    `poolwarden events explain ID` says what an event id means and what to do.
    """
    if ctx.invoked_subcommand is not None:
        return
    if groups and follow:
        raise click.UsageError("--groups and --follow do not go together")
    store = open_store(state_dir_of_group(ctx, state_dir, config_file))
    since_time = time.time() - since if since is not None else None
    filters: dict[str, Any] = {"pool": pool, "event_id": event_id, "level": level}
    with store:
        if groups:
            found = store.groups(since=since_time, **filters)
            if as_json:
                print_json_lines(found)
            else:
                print_groups(found)
            return
        last_seq = store.last_seq()
        events = store.query(since=since_time, limit=limit or None, **filters)
        if as_json:
            print_json_lines(events)
        else:
            print_events(events, following=follow)
            total = store.count(since=since_time, **filters) if limit else len(events)
            if total > len(events):
                click.echo(
                    f"(the newest {len(events)} of {total} events; -n 0 shows all)", err=True
                )
        _flush()
        if follow:
            last_seq = max([last_seq, *(event.seq for event in events)])
            _follow(store, filters, last_seq, as_json)


def _follow(store: EventStore, filters: dict[str, Any], last_seq: int, as_json: bool) -> None:
    """Print the events after `last_seq` as they are appended, until Ctrl-C."""
    interruptible()
    try:
        while True:
            time.sleep(FOLLOW_POLL)
            events = store.query(after_seq=last_seq, **filters)
            if not events:
                continue
            if as_json:
                print_json_lines(events)
            else:
                print_events(events, header=False)
            _flush()
            last_seq = events[-1].seq
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `poolwarden events -f | head`
        return


@events_group.command("show", short_help="Print one event with its whole evidence.")
@click.argument("seq", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the event as JSON.")
@location_options
@click.pass_context
def show_command(
    ctx: click.Context, seq: int, as_json: bool, state_dir: str | None, config_file: str | None
) -> None:
    """Print event SEQ whole: who ended the worker, the traceback or crash dump
    with the app's source lines, the requests in flight, the last output lines,
    and what to do next. SEQ is the number `poolwarden events` lists (and the
    `X-Poolwarden-Event` header of a 502 carries)."""
    with open_store(state_dir_of_group(ctx, state_dir, config_file)) as store:
        event = store.get(seq)
        newest = store.last_seq()
    if event is None:
        why = "pruned" if 0 < seq <= newest else "not written yet"
        fail(f"no event {seq} in the log ({why}; the newest is {newest})")
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(event.to_dict()), indent=2).decode())
    else:
        print_event(event)


@events_group.command("explain", short_help="What an event id means and what to do next.")
@click.argument("key", metavar="[ID]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the catalog entry as JSON.")
@unused_state_dir
def explain_command(key: str | None, as_json: bool) -> None:
    """What event ID (a number like 5009, or a name like worker_ended_unexpectedly)
    means, what usually causes it, and what to do next. Without ID, list the
    catalog."""
    if key is None:
        entries = sorted(CATALOG.values(), key=lambda entry: entry.id)
        if as_json:
            for entry in entries:
                click.echo(msgspec.json.encode(entry).decode())
            return
        width = max(len(entry.name) for entry in entries)
        for entry in entries:
            reserved = " (reserved)" if entry.reserved else ""
            click.echo(
                f"{entry.id}  {entry.level:<7}  {entry.name:<{width}}  {entry.title}{reserved}"
            )
        return
    try:
        entry = lookup(key)
    except UnknownEventId:
        fail(f"no event {key} in the catalog (`poolwarden events explain` lists every id)")
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(entry), indent=2).decode())
    else:
        click.echo(explain(entry.id))


COMMANDS: list[click.Command] = [events_group]


def register(main: click.Group) -> None:
    """Add `poolwarden events` to `main`; a name already taken is a ValueError."""
    add_commands(main, COMMANDS)
