"""The page a `503 startup_failed` shows in development mode.

Like Passenger's spawn error page: the headline, the failing module and line,
and the app's traceback, so a developer sees why without opening a terminal.
Only with `dev_mode = true`: tracebacks can hold secrets, so a production
server says only which event to read.
"""

from __future__ import annotations

import html

from poolwarden.channel import StartupFailure


def startup_failure_page(pool: str, failure: StartupFailure, event_seq: int | None) -> str:
    event = (
        f"<p>Event {event_seq}: <code>poolwarden events show {event_seq}</code></p>"
        if event_seq is not None
        else ""
    )
    where = ""
    if failure.module:
        where = f" in <code>{html.escape(failure.module)}</code>"
        if failure.lineno:
            where += f", line {failure.lineno}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>503: the app of pool {html.escape(pool)} cannot start</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:2em;max-width:70em}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body>
<h1>The app of pool <code>{html.escape(pool)}</code> cannot start</h1>
<p><strong>{html.escape(failure.exception_type)}: {html.escape(failure.message)}</strong></p>
<p>{html.escape(failure.phase)} failed{where} (app <code>{html.escape(failure.app)}</code>).</p>
{event}
<pre>{html.escape(failure.traceback or failure.headline())}</pre>
<p><small>poolwarden shows this page because <code>dev_mode</code> is on.</small></p>
</body></html>
"""
