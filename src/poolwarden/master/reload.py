"""Applying the config file again to a running server (SIGHUP, `poolwarden config reload`).

```
 Master.reload_config ──read_new_config──▶ load_config ── invalid: logged, event 2051,
        │                                                  ConfigError; the running config stays
        ├─▶ ListenerSet.open_new (a bind that fails refuses the whole reload)
        ├─▶ apply_pool_changes: removed ─▶ Pool.drain(REMOVED)
        │                       changed ─▶ Pool.update_settings (an overlapped recycle),
        │                                  or new settings for the next workers started
        │                       added ───▶ a new Pool, started
        ├─▶ every Pool.set_routes(the new routing table)
        ├─▶ ListenerSet.close_removed; FrontEnd limits and health path
        └─▶ report_reload: event 2050 and a log line; the control API's answer
```

The master keeps the order above: nothing changes until the file is
valid and every new bind is open, and unchanged pools are not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from poolwarden.config import Config, ConfigError, PoolDiff, diff_pools, format_issues, load_config
from poolwarden.events import catalog
from poolwarden.master.binding import Listener
from poolwarden.master.event_log import EventLog
from poolwarden.master.pool import Pool, StopReason
from poolwarden.settings import PoolSettings

log = logging.getLogger("poolwarden")


def read_new_config(path: str, events: EventLog) -> Config:
    """The file's config. An invalid file is logged and written to the event
    log, and its ConfigError raised: the running configuration stays."""
    try:
        return load_config(path)
    except ConfigError as error:
        log.error(
            "config reload refused, the running configuration stays:\n%s",
            format_issues(error.errors),
        )
        events.emit(
            catalog.CONFIG_RELOAD_REFUSED,
            f"config reload refused: {len(error.errors)} error(s) in {path}",
            details={"issues": [[i.path, i.message] for i in error.errors]},
        )
        raise


def apply_pool_changes(
    pools: dict[str, Pool],
    old: Config,
    new: Config,
    new_pool: Callable[[PoolSettings], Pool],
) -> PoolDiff:
    """Drain the pools `new` removes, give the changed ones their settings,
    and start the added ones (put in `pools`, the master's own dict)."""
    diff = diff_pools(old, new)
    for name in diff.removed:
        pools[name].drain(pools[name].settings.shutdown_time_limit, StopReason.REMOVED)
    for name in diff.changed:
        settings = new.pool_settings(name)
        pool = pools[name]
        if new.pools[name].recycling.on_config_change:
            pool.update_settings(settings)
        else:
            pool.settings = settings  # applies to the next workers started
    for name in diff.added:
        pool = new_pool(new.pool_settings(name))
        pools[name] = pool
        pool.start()
    return diff


def report_reload(diff: PoolDiff, opened: list[Listener], events: EventLog) -> dict[str, Any]:
    """The event and the log line of a reload done, and the control API's answer."""
    result = {
        "added": diff.added,
        "removed": diff.removed,
        "changed": diff.changed,
        "unchanged": diff.unchanged,
        "bindings_opened": [listener.text for listener in opened],
    }
    events.emit(
        catalog.CONFIG_RELOADED,
        f"config reloaded: {len(diff.added)} pool(s) added, {len(diff.removed)} removed, "
        f"{len(diff.changed)} changed",
        details=result,
    )
    log.info(
        "config reloaded: pools added %s, removed %s, changed %s, unchanged %s",
        diff.added or "none",
        diff.removed or "none",
        diff.changed or "none",
        diff.unchanged or "none",
    )
    return result
