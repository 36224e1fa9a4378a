"""Events as plain text: the lines of `poolwarden events`, one event whole, the catalog.

Pure functions of their arguments, except that source lines are read from
the app's files through `source` (a lookup the caller may replace; the
default reads with `linecache`), the analog of IIS's symbols: a crash dump
or a traceback shows the line of code of each frame when the file is there.

Plain text, no rich: the CLI adds colour (`poolwarden.cli.events`); the
master may use the same text (dev mode's error page) without importing rich.
"""

from __future__ import annotations

import json
import linecache
import math
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any

from poolwarden.events.catalog import CATALOG, EventType, causes, next_steps
from poolwarden.events.store import Event, Group

SourceLookup = Callable[[str, int], str | None]
"""(filename, line number) → that line of source, or None if unavailable."""

NONE = "-"


def read_source_line(filename: str, lineno: int) -> str | None:
    """A line of a file on this machine (None if the file or line is not there)."""
    if not filename or filename.startswith("<") or lineno <= 0:
        return None
    line = linecache.getline(filename, lineno)
    return line.rstrip("\n") if line else None


def no_source(filename: str, lineno: int) -> str | None:
    """A lookup that never finds anything (for output without file access)."""
    return None


# --- small formats ------------------------------------------------------------------


def format_time(when: float, tz: tzinfo | None = None, *, precise: bool = False) -> str:
    """`2024-05-01 12:00:03` in local time (or `tz`); `precise` adds ms and the offset."""
    moment = datetime.fromtimestamp(when, tz) if tz else datetime.fromtimestamp(when).astimezone()
    if precise:
        millis = moment.microsecond // 1000
        return moment.strftime(f"%Y-%m-%d %H:%M:%S.{millis:03d} %z")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_age(seconds: float | None) -> str:
    """`0.25s`, `12.3s`, `12m05s`, `3h07m`, `2d04h`."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return NONE
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def format_bytes(size: int | None) -> str:
    """`812KiB`, `45.2MiB`, `1.50GiB`."""
    if size is None:
        return NONE
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.2f}{unit}" if value < 10 else f"{value:.1f}{unit}"
    return f"{size}B"


def _text(value: Any) -> str:
    return NONE if value is None else str(value)


# --- lists ---------------------------------------------------------------------------

EVENT_COLUMNS = (
    f"{'SEQ':>6}  {'TIME':<19}  {'LEVEL':<7}  {'ID':>4}  {'POOL':<12}  {'PID':>7}  MESSAGE"
)


def format_event_line(event: Event, tz: tzinfo | None = None) -> str:
    """One event on one line, in the columns of `EVENT_COLUMNS` (greppable)."""
    return (
        f"{event.seq:>6}  {format_time(event.time, tz):<19}  {event.level:<7}  "
        f"{event.event_id:>4}  {_text(event.pool):<12}  {_text(event.pid):>7}  {event.message}"
    )


def format_events(events: Sequence[Event], tz: tzinfo | None = None) -> str:
    """`poolwarden events`: a header, then one line per event, newest last."""
    if not events:
        return "no events"
    return "\n".join([EVENT_COLUMNS, *(format_event_line(event, tz) for event in events)])


def format_groups(groups: Sequence[Group], tz: tzinfo | None = None) -> str:
    """`poolwarden events --groups`: each failure with its count, first and
    last seen, and its newest occurrence (sequence number and message)."""
    if not groups:
        return "no failures"
    header = (
        f"{'COUNT':>6}  {'FIRST SEEN':<19}  {'LAST SEEN':<19}  {'ID':>4}  {'POOLS':<12}  "
        "FINGERPRINT"
    )
    lines = [header]
    for group in groups:
        pools = ",".join(group.pools) or NONE
        lines.append(
            f"{group.count:>6}  {format_time(group.first_seen, tz):<19}  "
            f"{format_time(group.last_seen, tz):<19}  {group.event_id:>4}  {pools:<12}  "
            f"{group.fingerprint}"
        )
        lines.append(f"{'':>6}  last: {group.last_seq}: {group.message}")
    return "\n".join(lines)


# --- one event, whole -------------------------------------------------------------------

_FRAME_LINE = re.compile(r'^(?P<indent>\s*)File "(?P<file>[^"]*)", line (?P<line>\d+)')

KNOWN_DETAILS = frozenset(
    {
        "who",
        "ended_by",
        "exit_code",
        "signal",
        "signals_sent",
        "signal_sender",
        "ever_ready",
        "uptime",
        "requests_served",
        "last_rss",
        "oom_killed",
        "in_flight",
        "stdout_tail",
        "stderr_tail",
        "startup_failure",
        "exception",
        "crash",
        "thread",
        "core_dump",
        "core_dump_elsewhere",
    }
)
"""Details `format_event` shows in sections of their own; the rest are listed."""


def with_source_lines(text: str, source: SourceLookup = read_source_line) -> str:
    """A traceback or faulthandler dump, with each frame's source line added
    below it where the text lacks one and the file is there."""
    lines = text.splitlines()
    out: list[str] = []
    for index, line in enumerate(lines):
        out.append(line)
        match = _FRAME_LINE.match(line)
        if not match:
            continue
        indent = match["indent"]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        has_source = following.startswith(indent + "  ") and not _FRAME_LINE.match(following)
        if has_source:
            continue
        code = source(match["file"], int(match["line"]))
        if code is not None and code.strip():
            out.append(f"{indent}    {code.strip()}")
    return "\n".join(out)


def source_context(
    filename: str, lineno: int, source: SourceLookup = read_source_line, around: int = 2
) -> list[str]:
    """The lines around `lineno` of a file, numbered, the line itself marked;
    empty if the file is not there."""
    if source(filename, lineno) is None:
        return []
    numbers = range(max(1, lineno - around), lineno + around + 1)
    found = [(number, source(filename, number)) for number in numbers]
    width = len(str(numbers[-1]))
    return [
        f"{'>' if number == lineno else ' '} {number:>{width}} | {code}"
        for number, code in found
        if code is not None
    ]


def _section(title: str, body: list[str]) -> list[str]:
    return ["", title, *body] if body else []


def _indent(text: str, prefix: str = "  ") -> list[str]:
    return [prefix + line if line else line for line in text.splitlines()]


def _fields(rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(label) for label, _ in rows), default=0)
    return [f"  {label:<{width}}  {value}" for label, value in rows]


def _app_context(frame: Any, source: SourceLookup) -> list[str]:
    if not isinstance(frame, dict) or not frame.get("filename") or not frame.get("lineno"):
        return []
    context = source_context(str(frame["filename"]), int(frame["lineno"]), source)
    if not context:
        return []
    where = f"{frame['filename']}, line {frame['lineno']}"
    if frame.get("name"):
        where += f", in {frame['name']}"
    return ["", f"  {where}:", *(f"    {line}" for line in context)]


def _ending_rows(details: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if "who" in details:
        rows.append(("ended by", _text(details.get("who"))))
    if details.get("signal"):
        rows.append(("signal", str(details["signal"])))
    elif details.get("exit_code") is not None:
        rows.append(("exit status", str(details["exit_code"])))
    if "ended_by" in details:
        rows.append(("asked to end", _text(details.get("ended_by") or "no")))
    if details.get("signals_sent"):
        rows.append(("poolwarden sent", ", ".join(map(str, details["signals_sent"]))))
    if details.get("signal_sender"):
        rows.append(("signal sender", str(details["signal_sender"])))
    if "ever_ready" in details:
        rows.append(("was ready", "yes" if details["ever_ready"] else "no"))
    if "uptime" in details:
        rows.append(("uptime", format_age(details.get("uptime"))))
    if "requests_served" in details:
        rows.append(("requests served", _text(details.get("requests_served"))))
    if "last_rss" in details:
        rows.append(("last RSS", format_bytes(details.get("last_rss"))))
    if "oom_killed" in details:
        oom = details.get("oom_killed")
        verdict = {
            True: "yes: the kernel says its OOM killer killed it",
            False: "no: the kernel's OOM kill count did not change",
            None: "unknown (no evidence either way)",
        }
        rows.append(("OOM killer", verdict.get(oom, str(oom))))
    if details.get("thread"):
        rows.append(("thread", str(details["thread"])))
    if details.get("core_dump"):
        rows.append(
            ("core dump", f"{details['core_dump']} (`poolwarden dumps` says how to open it)")
        )
    elif details.get("core_dump_elsewhere"):
        rows.append(("core dump", str(details["core_dump_elsewhere"])))
    return rows


def _startup_failure_lines(failure: Any, source: SourceLookup) -> list[str]:
    if not isinstance(failure, dict):
        return []
    rows = [("phase", _text(failure.get("phase"))), ("app", _text(failure.get("app")))]
    if failure.get("module"):
        where = str(failure["module"])
        if failure.get("lineno"):
            where += f", line {failure['lineno']}"
        rows.append(("module", where))
    rows.append(("exception", f"{failure.get('exception_type')}: {failure.get('message')}"))
    lines = _section("Start-up failure", _fields(rows))
    traceback = failure.get("traceback")
    if traceback:
        lines += ["", *_indent(with_source_lines(str(traceback), source))]
    frames = failure.get("frames") or []
    app_frame = None
    if failure.get("module") and failure.get("lineno") and frames:
        app_frame = next(
            (f for f in reversed(frames) if f.get("lineno") == failure.get("lineno")), None
        )
    lines += _app_context(app_frame, source)
    return lines


def _exception_lines(exception: Any, source: SourceLookup) -> list[str]:
    if not isinstance(exception, dict):
        return []
    title = "Exception"
    if exception.get("type"):
        title += f": {exception['type']}"
        if exception.get("message"):
            title += f": {str(exception['message']).splitlines()[0]}"
    body: list[str] = []
    if exception.get("traceback"):
        body = _indent(with_source_lines(str(exception["traceback"]), source))
    return [
        *_section(title, body or ["  (no traceback)"]),
        *_app_context(exception.get("frame"), source),
    ]


def _crash_lines(crash: Any, source: SourceLookup) -> list[str]:
    if not isinstance(crash, dict):
        return []
    title = "Crash dump (faulthandler)"
    if crash.get("fatal_error"):
        title += f": Fatal Python error: {crash['fatal_error']}"
    rows: list[tuple[str, str]] = []
    frame = crash.get("frame")
    if isinstance(frame, dict):
        rows.append(
            (
                "app frame",
                f"{frame.get('filename')}, line {frame.get('lineno')}, in {frame.get('name')}",
            )
        )
    else:
        rows.append(("app frame", "none in the crashing thread"))
    lines = _section(title, _fields(rows))
    lines += _app_context(frame, source)
    if crash.get("dump"):
        lines += ["", *_indent(with_source_lines(str(crash["dump"]).rstrip("\n"), source))]
    return lines


def _in_flight_lines(requests: Any) -> list[str]:
    if not isinstance(requests, list) or not requests:
        return []
    lines = []
    for request in requests:
        if not isinstance(request, dict):
            lines.append(f"  {request}")
            continue
        parts = [f"{_text(request.get('method'))} {_text(request.get('path'))}"]
        if request.get("client"):
            parts.append(f"client {request['client']}")
        if "elapsed" in request:
            parts.append(f"elapsed {format_age(request.get('elapsed'))}")
        if "response_started" in request:
            parts.append(
                "response started" if request["response_started"] else "response not started"
            )
        known = {"method", "path", "client", "elapsed", "response_started"}
        parts += [f"{key} {value}" for key, value in request.items() if key not in known]
        lines.append("  " + "  ".join(parts))
    count = len(requests)
    return _section(f"In flight ({count} request{'' if count == 1 else 's'})", lines)


def _tail_lines(title: str, tail: Any) -> list[str]:
    if not isinstance(tail, list) or not tail:
        return []
    return _section(
        f"{title} ({len(tail)} line{'' if len(tail) == 1 else 's'})",
        [f"  | {line}" for line in tail],
    )


def _evidence_lines(details: dict[str, Any], source: SourceLookup) -> list[str]:
    """How a worker ended and everything it left: its event's sections."""
    lines = _section(
        "How it ended" if "who" in details else "Context", _fields(_ending_rows(details))
    )
    lines += _startup_failure_lines(details.get("startup_failure"), source)
    lines += _exception_lines(details.get("exception"), source)
    lines += _crash_lines(details.get("crash"), source)
    lines += _in_flight_lines(details.get("in_flight"))
    lines += _tail_lines("Last stderr lines", details.get("stderr_tail"))
    lines += _tail_lines("Last stdout lines", details.get("stdout_tail"))
    return lines


def format_event(
    event: Event, tz: tzinfo | None = None, source: SourceLookup = read_source_line
) -> str:
    """`poolwarden events show SEQ`: one event with its whole evidence, and
    what to do next (the catalog's steps, with this event's numbers)."""
    entry: EventType | None = CATALOG.get(event.event_id)
    name = entry.name if entry else "unknown"
    lines = [f"event {event.seq}: {event.event_id} {name} ({event.level})"]
    if entry:
        lines.append(entry.title)
    lines.append("")
    rows = [
        ("time", format_time(event.time, tz, precise=True)),
        ("pool", _text(event.pool)),
        ("pid", _text(event.pid)),
        ("message", event.message),
    ]
    if event.fingerprint:
        rows.append(("fingerprint", event.fingerprint))
    lines += _fields(rows)
    details = event.details
    lines += _evidence_lines(details, source)
    last = details.get("last_failure_details")
    if isinstance(last, dict):
        # Rapid-fail protection (5002) carries the last failure's evidence:
        # shown as that failure's own event shows it, so this one event tells why.
        seq = details.get("last_failure_seq")
        title = "The last failure" + (f" (event {seq})" if seq is not None else "")
        lines += _section(title, _indent(_text(details.get("last_failure"))))
        lines += _evidence_lines(last, source)
    other = [
        (key, value)
        for key, value in details.items()
        if key not in KNOWN_DETAILS
        and not (key == "last_failure_details" and isinstance(last, dict))
        and not (key == "last_failure" and isinstance(last, dict))
    ]
    lines += _section(
        "Other details",
        [
            f"  {key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
            for key, value in other
        ],
    )
    if entry:
        values: dict[str, object] = {"seq": event.seq, "pid": event.pid, "pool": event.pool}
        here = f"`poolwarden events show {event.seq}`"  # this very command: not a next step
        steps = [step for step in next_steps(entry, values) if here not in step]
        lines += _section("What to do next", [f"  - {step}" for step in steps])
        lines.append("")
        lines.append(f"More about {event.event_id}: poolwarden events explain {event.event_id}")
    return "\n".join(lines)


# --- the catalog as a document -----------------------------------------------------------

CATALOG_START = "<!-- catalog:start -->"
CATALOG_END = "<!-- catalog:end -->"
_UPDATE_COMMAND = "python -m poolwarden.events.render --update-docs docs/events.md"


def format_catalog_markdown() -> str:
    """The catalog as the Markdown section of `docs/events.md` (markers included)."""
    entries = sorted(CATALOG.values(), key=lambda entry: entry.id)
    lines = [
        CATALOG_START,
        f"<!-- Generated from poolwarden.events.catalog: edit the catalog, then run"
        f" `{_UPDATE_COMMAND}`. -->",
        "",
        "| id | name | level | title |",
        "|---|---|---|---|",
    ]
    for entry in entries:
        title = entry.title + (" *(reserved)*" if entry.reserved else "")
        lines.append(
            f"| [{entry.id}](#{entry.id}-{entry.name}) | `{entry.name}` | {entry.level} | {title} |"
        )
    for entry in entries:
        origin = "same number and meaning as IIS's WAS event" if entry.iis else "poolwarden"
        lines += [
            "",
            f"### {entry.id} {entry.name}",
            "",
            f"**{entry.title}.** *{entry.level} · {entry.category} · {origin}*"
            + (" · **reserved**: nothing writes it yet." if entry.reserved else ""),
            "",
            entry.meaning,
            "",
            "Usual causes:",
            "",
            *(f"- {cause}" for cause in causes(entry)),
            "",
            "What to do next:",
            "",
            *(f"- {step}" for step in next_steps(entry)),
        ]
    lines.append(CATALOG_END)
    return "\n".join(lines)


def update_catalog_section(document: str) -> str:
    """`document` with its catalog section (between the markers) regenerated."""
    start, end = document.find(CATALOG_START), document.find(CATALOG_END)
    if start < 0 or end < start:
        raise ValueError(f"no {CATALOG_START} ... {CATALOG_END} section in the document")
    return document[:start] + format_catalog_markdown() + document[end + len(CATALOG_END) :]


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--update-docs":
        print(f"usage: {_UPDATE_COMMAND}", file=sys.stderr)
        return 2
    path = argv[1]
    with open(path, encoding="utf-8") as file:
        document = file.read()
    updated = update_catalog_section(document)
    if updated != document:
        with open(path, "w", encoding="utf-8") as file:
            file.write(updated)
        print(f"{path}: catalog section updated")
    else:
        print(f"{path}: up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
