"""The admin commands' output: the control API's JSON answers as text (pure).

    GET /v1/pools, /v1/workers, /v1/requests, /v1/health, .../stack, POST .../reload
        │ JSON (dicts and lists, as the server sent them)
        ▼
    format_* ──▶ str, or a rich table (rendered by `common.print_renderable`)

No I/O: every function takes the answer and returns what to print, so the
tables are tested without a server and the commands stay thin. A value the
server does not know (None) shows as `-`.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from poolwarden.cli.common import NONE, cell, plain_table
from poolwarden.events.render import format_age, format_bytes

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


def format_percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}%"


def format_pools(pools: list[dict[str, Any]]) -> RenderableType:
    """`poolwarden pools`: one row per pool."""
    if not pools:
        return Text("no pools")
    columns = ("POOL", "STATE", "WORKERS", "QUEUE", "REQUESTS", "LAST EVENT")
    table = plain_table(*columns, right=("WORKERS", "QUEUE", "REQUESTS"))
    for pool in pools:
        table.add_row(
            cell(pool.get("name")),
            format_state(str(pool.get("state")), pool.get("reason")),
            cell(pool.get("workers")),
            cell(pool.get("queue")),
            cell(pool.get("requests_served")),
            cell(pool.get("last_event")),
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
    columns = ("PID", "POOL", "STATE", "UPTIME", "REQUESTS", "LIMIT", "IN USE", "RSS", "CPU")
    table = plain_table(*columns, right=(*columns[3:], "PID"))
    for worker in workers:
        pid, python_pid = worker.get("pid"), worker.get("python_pid")
        wrapped = f" (python {python_pid})" if python_pid and python_pid != pid else ""
        table.add_row(
            cell(pid) + wrapped,
            cell(worker.get("pool")),
            format_state(str(worker.get("state"))),
            format_uptime(worker.get("uptime")),
            cell(worker.get("requests_served")),
            cell(worker.get("request_limit") or None),
            _in_use(worker),
            format_bytes(worker.get("rss")),
            format_percent(worker.get("cpu_percent")),
        )
    return table


def _in_use(worker: dict[str, Any]) -> str:
    """Connections in use of the worker's capacity: `3/8`, `2` (no limit),
    `2 blocked` while an ASGI worker's loop is blocked."""
    in_use = worker.get("connections_in_use", worker.get("active_requests"))
    capacity = worker.get("capacity")
    text = cell(in_use) + (f"/{capacity}" if capacity else "")
    return text + (" blocked" if worker.get("loop_blocked") else "")


def format_requests(requests: list[dict[str, Any]], min_elapsed: float = 0.0) -> RenderableType:
    """`poolwarden requests`: one row per request in flight, oldest first."""
    if not requests:
        older = f" older than {format_elapsed(min_elapsed)}" if min_elapsed > 0 else ""
        return Text(f"no requests in flight{older}")
    columns = ("PID", "POOL", "METHOD", "PATH", "CLIENT", "ELAPSED", "PHASE")
    table = plain_table(*columns, right=("PID", "ELAPSED"))
    table.columns[3].overflow = "fold"
    ordered = sorted(requests, key=lambda r: -float(r.get("elapsed") or 0))
    for request in ordered:
        table.add_row(
            cell(request.get("pid")),
            cell(request.get("pool")),
            cell(request.get("method")),
            Text(cell(request.get("path"))),
            cell(request.get("client")),
            format_elapsed(request.get("elapsed")),
            cell(request.get("phase")),
        )
    return table


def format_health(health: dict[str, Any]) -> str:
    """`status: degraded` and each pool's state, one per line."""
    lines = [f"status: {health.get('status')}"]
    pools = health.get("pools")
    not_ready = health.get("not_ready")
    if not isinstance(not_ready, dict):
        not_ready = {}
    if isinstance(pools, dict):
        width = max((len(name) for name in pools), default=0)
        for name, state in pools.items():
            line = f"  {name:<{width}}  {state}"
            why = not_ready.get(name)
            if isinstance(why, dict):
                event = f", event {why['event']}" if why.get("event") else ""
                line += f"  not ready: {why.get('reason')}{event}"
            lines.append(line)
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
