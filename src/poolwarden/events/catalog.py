"""The event id catalog: every event poolwarden writes, by its stable number.

Numbers never change meaning once released: an operator's alert rules, log
queries and muscle memory depend on them. Where an event means what a WAS
event of IIS means, it has WAS's number (5002, 5009, 5010, ...), so that an
IIS operator reads `5009` and knows what happened. poolwarden's own events
are in the range 2000-2099:

| range     | what                                   |
|-----------|----------------------------------------|
| 2000-2009 | the server (master) itself             |
| 2010-2019 | pools                                  |
| 2020-2039 | worker processes                       |
| 2040-2049 | requests                               |
| 2050-2059 | configuration                          |
| 5000-5999 | WAS numbers, same meaning as in IIS    |

Each entry says what the event means, what usually causes it, and what to do
next, with the commands to run; `poolwarden events explain ID` prints it and
`docs/events.md` is generated from it (a test keeps the two equal). Next
steps may name `{seq}`, `{pid}` and `{pool}`: `events show` fills them in
from the event, `explain` shows them as SEQ, PID and POOL.

A worker's death and a kill are **one** event, written when the process has
been reaped and classified (`poolwarden.events.classify`): 5009, 5010, 5011,
5012, 5013, 5127, 2022, 2023, 2024, 2026. Decisions that precede a planned
exit (a recycle: 5074-5080, 5117; an idle shutdown: 5186) are events of
their own, written when poolwarden decides; the worker's exit that follows is
2023.
"""

from __future__ import annotations

import textwrap
from typing import Literal

import msgspec

Level = Literal["info", "warning", "error"]
LEVELS: tuple[Level, ...] = ("info", "warning", "error")
"""Least severe first; `--level warning` means warning and worse."""
LEVEL_RANK: dict[str, int] = {level: rank for rank, level in enumerate(LEVELS)}

Category = Literal["server", "pool", "worker", "recycle", "request", "config"]

RecycleReason = Literal[
    "time",
    "requests",
    "schedule",
    "memory",
    "private_memory",
    "unhealthy",
    "on_demand",
    "config_change",
]
"""The recycle reasons of `recycling.log_event_on_recycle` (and `unhealthy`)."""


class EventType(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the catalog."""

    id: int
    name: str
    """snake_case, unique; stable like the id."""
    level: Level
    category: Category
    title: str
    """One line, as a log line's headline."""
    meaning: str
    causes: tuple[str, ...]
    next_steps: tuple[str, ...]
    """Concrete actions, most useful first; may name {seq}, {pid}, {pool}."""
    iis: bool = False
    """The number is WAS's, with the same meaning."""
    reserved: bool = False
    """Nothing writes it yet; the number is kept for the feature named."""


_SHOW = "Read the whole evidence: `poolwarden events show {seq}`."
_GROUPS = "See whether it repeats, and since when: `poolwarden events --groups --pool {pool}`."
_START = "Once fixed, start the pool again: `poolwarden pool start {pool}`."

_ENTRIES: tuple[EventType, ...] = (
    # --- the server ---------------------------------------------------------------
    EventType(
        id=2000,
        name="server_started",
        level="info",
        category="server",
        title="The server started",
        meaning="The master process started, opened its listeners and the event log, "
        "and started the pools that start with the server. The details name the "
        "version, the configuration file and the listeners.",
        causes=(
            "`poolwarden serve` or `poolwarden run` was started (by a person, systemd, a "
            "container runtime).",
            "The master was restarted after a crash: look for a missing 2001 before it.",
        ),
        next_steps=(
            "Check that every pool is where you expect it: `poolwarden pools`.",
            "If no 2001 (server stopping) precedes this event, the previous master died "
            "without shutting down: check the service manager's log (`journalctl -u ...`) "
            "and the kernel log for an OOM kill of the master.",
        ),
    ),
    EventType(
        id=2001,
        name="server_stopping",
        level="info",
        category="server",
        title="The server is stopping",
        meaning="The master was asked to stop (SIGTERM, SIGINT or SIGQUIT): it stops "
        "accepting connections, drains every pool within the shut-down time limit and "
        "exits. The details name the signal.",
        causes=("A deploy, `systemctl stop`, a container stop, or Ctrl-C in a terminal.",),
        next_steps=(
            "Nothing, if the stop was planned.",
            "Workers that do not finish in time are killed and logged as 5013.",
        ),
    ),
    EventType(
        id=2002,
        name="server_stopped",
        level="info",
        category="server",
        title="The server stopped",
        meaning="Every pool was drained and the master is exiting. The last event a "
        "cleanly stopped server writes.",
        causes=("The stop announced by 2001 completed.",),
        next_steps=("Nothing.",),
    ),
    # --- pools ----------------------------------------------------------------------
    EventType(
        id=2010,
        name="pool_state_changed",
        level="info",
        category="pool",
        title="A pool changed state",
        meaning="A pool moved between started, startup_failed, stopping and stopped for "
        "a reason no more specific event covers (for example: a worker became ready "
        "again after start-up failures). The details name the old and new state and "
        "the reason.",
        causes=(
            "A worker of a pool in startup_failed became ready: the pool serves again.",
            "A reload added or removed the pool.",
        ),
        next_steps=("See the pool's current state: `poolwarden pools`.",),
    ),
    EventType(
        id=2011,
        name="pool_started_by_administrator",
        level="info",
        category="pool",
        title="A pool was started by an administrator",
        meaning="`poolwarden pool start` (or the control API) started the pool; this is "
        "how a pool stopped by rapid-fail protection (5002) or by an administrator "
        "comes back.",
        causes=("Someone ran `poolwarden pool start {pool}`.",),
        next_steps=(
            "Watch whether its workers start: `poolwarden events --follow --pool {pool}`.",
        ),
    ),
    EventType(
        id=2012,
        name="pool_stopped_by_administrator",
        level="info",
        category="pool",
        title="A pool was stopped by an administrator",
        meaning="`poolwarden pool stop` (or the control API) stopped the pool: its workers "
        "drain and exit, and every request to it gets `503 pool_stopped` until it is "
        "started again.",
        causes=("Someone ran `poolwarden pool stop {pool}`.",),
        next_steps=("Start it again when ready: `poolwarden pool start {pool}`.",),
    ),
    EventType(
        id=2013,
        name="pool_startup_failed",
        level="error",
        category="pool",
        title="A pool has no worker that can start",
        meaning="No worker of the pool could start: requests to it get "
        "`503 startup_failed` while poolwarden retries with a back-off (1 s, doubling to "
        "30 s). The start-up failures themselves are 2022, 5012 or 5022 events; this "
        "event marks the pool becoming unavailable.",
        causes=(
            "The app cannot be imported, its factory raises, or its ASGI lifespan "
            "start-up fails (a bad deploy, a missing dependency or environment variable).",
            "A service the app needs at start-up (database, cache) is unreachable.",
        ),
        next_steps=(
            "Find the failing start-up and its traceback: "
            "`poolwarden events --pool {pool} --id 2022`, then `poolwarden events show SEQ`.",
            "Reproduce outside the server: `poolwarden run APP` in the app's directory.",
        ),
    ),
    EventType(
        id=2014,
        name="auto_shutdown_command_ran",
        level="info",
        category="pool",
        title="The pool's auto-shutdown command ran",
        meaning="Rapid-fail protection disabled the pool and `rapid_fail.auto_shutdown_command` "
        "ran with POOLWARDEN_POOL, POOLWARDEN_EVENT_SEQ (the 5002 event) and "
        "POOLWARDEN_STATE_DIR in its environment, and exited 0. The details carry its "
        "output.",
        causes=("A pool disabled by rapid-fail protection, with the command configured.",),
        next_steps=("Fix the pool's failure (see the 5002 event), then `poolwarden pool start`.",),
    ),
    EventType(
        id=2015,
        name="auto_shutdown_command_failed",
        level="warning",
        category="pool",
        title="The pool's auto-shutdown command failed",
        meaning="`rapid_fail.auto_shutdown_command` could not be started, exited non-zero, or "
        "ran past `auto_shutdown_time_limit` and was killed. The details carry its error "
        "and output.",
        causes=("The command does not exist or is not executable; it failed or hung.",),
        next_steps=(
            _SHOW + " The details carry the command's output.",
            "Run the command by hand with the same environment to see it fail.",
        ),
    ),
    # --- workers ----------------------------------------------------------------------
    EventType(
        id=2020,
        name="worker_started",
        level="info",
        category="worker",
        title="A worker process was started",
        meaning="The master started a worker process for the pool (a fresh interpreter, "
        "`python -m poolwarden.worker`); it now loads the app. The details name the "
        "command and why it was started (on demand, a replacement, a recycle).",
        causes=("A request arrived for an on-demand pool, a worker was replaced or recycled.",),
        next_steps=("See the pool's workers: `poolwarden wp --pool {pool}`.",),
    ),
    EventType(
        id=2021,
        name="worker_ready",
        level="info",
        category="worker",
        title="A worker loaded the app and is ready",
        meaning="The worker imported the app (and its ASGI lifespan start-up passed); it "
        "now receives connections. The details give the start-up duration.",
        causes=("A worker started normally.",),
        next_steps=("Nothing.",),
    ),
    EventType(
        id=2022,
        name="worker_startup_failed",
        level="error",
        category="worker",
        title="A worker failed during start-up",
        meaning="The worker could not start the app: importing it, finding the attribute, "
        "calling the factory or the ASGI lifespan start-up raised, or the process ended "
        "before it was ready. The details name the phase, the app module and line where "
        "it failed (the innermost frame of the app's own code), the exception and the "
        "full traceback; for a process that died without reporting, its exit status or "
        "signal, its crash dump and its last output. Counts toward rapid-fail protection.",
        causes=(
            "A bug or a syntax error in the app, or a module it imports.",
            "A missing dependency (`ModuleNotFoundError`) or environment variable (`KeyError`).",
            "A service needed at start-up (database, cache, secrets) is unreachable.",
            "A native extension crashed while being imported (the crash dump shows where).",
        ),
        next_steps=(
            _SHOW + " The traceback is shown with the app's source lines.",
            "Reproduce it in a terminal: `poolwarden run APP` prints the same traceback.",
            "Debug the start-up itself: `poolwarden debug startup {pool}`, then "
            "`poolwarden pool start {pool}`.",
            _GROUPS,
        ),
    ),
    EventType(
        id=2023,
        name="worker_exited",
        level="info",
        category="worker",
        title="A worker exited as asked",
        meaning="poolwarden asked the worker to end (recycle, idle shutdown, drain, "
        "server shutdown, an administrator) and it finished its requests and exited "
        "cleanly. The message says who asked and why.",
        causes=("Planned work: a recycle, an idle time-out, a stop, a reload, a shutdown.",),
        next_steps=("Nothing.",),
    ),
    EventType(
        id=2024,
        name="worker_oom_killed",
        level="error",
        category="worker",
        title="A worker was killed by the kernel's OOM killer",
        meaning="The worker was killed with SIGKILL and the kernel says its OOM killer did "
        "it: the `oom_kill` count of the worker's own memory cgroup went up (cgroup v2 "
        "`memory.events`, v1 `memory.oom_control`), or the kernel log (`/dev/kmsg`) names "
        "the process. poolwarden writes this event only with that evidence; a SIGKILL "
        "without it is 5009 'from outside'. The details give the evidence "
        "(`oom_evidence`), the worker's last memory sample and the requests in flight. "
        "Counts toward rapid-fail protection.",
        causes=(
            "The app's memory grows with traffic or leaks until the container's or host's limit.",
            "A single request loads too much into memory (a large upload, an unbounded query).",
            "Too many workers or threads for the memory available.",
        ),
        next_steps=(
            _SHOW + " Look at the in-flight requests and the last RSS.",
            "Watch memory per worker: `poolwarden wp --pool {pool}`.",
            "Recycle before the limit: set `recycling.memory` or `recycling.private_memory` "
            "below the container limit, or `recycling.memory_hard_limit`.",
        ),
    ),
    EventType(
        id=2025,
        name="app_thread_exception",
        level="warning",
        category="worker",
        title="An exception escaped a thread the app started",
        meaning="A thread the app started ended with an exception "
        "(`threading.excepthook`); the worker lives on, but whatever that thread did "
        "(a background job, a consumer, a cache refresher) has stopped. The details "
        "name the thread and carry the traceback.",
        causes=("A bug in the app's background thread, or an error it does not handle.",),
        next_steps=(_SHOW, _GROUPS),
    ),
    EventType(
        id=2026,
        name="worker_memory_hard_limit",
        level="error",
        category="worker",
        title="A worker was killed at the memory hard limit",
        meaning="The worker's memory exceeded `recycling.memory_hard_limit`, so poolwarden "
        "killed it at once without draining (a last resort before the kernel's OOM "
        "killer). Requests in flight got 502. The details give the memory sample.",
        causes=(
            "A memory spike or leak faster than the recycle limits can handle.",
            "A single request loading too much into memory.",
        ),
        next_steps=(
            _SHOW + " The in-flight requests are likely suspects.",
            "Recycle earlier and gently with `recycling.memory` or `recycling.private_memory`.",
        ),
    ),
    EventType(
        id=2027,
        name="worker_orphaned",
        level="warning",
        category="worker",
        title="A failed worker was kept stopped for inspection",
        meaning="With `rapid_fail.orphan_worker = true`, a failed or hung worker is kept "
        "alive, stopped with SIGSTOP, instead of being killed, so a debugger can attach. "
        "It holds its memory until someone ends it.",
        causes=("A worker failure in a pool with `orphan_worker` on.",),
        next_steps=(
            "Inspect it: `poolwarden stack {pid}`, or `gdb -p {pid}` / `py-spy dump --pid {pid}`.",
            "End it when done: `kill -KILL {pid}`.",
        ),
    ),
    # --- requests ------------------------------------------------------------------
    EventType(
        id=2040,
        name="request_timeout",
        level="warning",
        category="request",
        title="A request ran longer than the request time-out",
        meaning="A request ran past `process_model.request_timeout`. Its client got `504` "
        "from the master (or, if the response had started, the end of the connection); "
        "the details carry the request and the stack of the thread running it (`stack`) "
        "and of every thread (`threads`). Then `request_timeout_action`: `log` lets the "
        "thread run on, `recycle` replaces the worker with overlap, `kill` ends it (a "
        "second 2040 event records that end).",
        causes=("A slow or stuck call to a database or another service; a deadlock.",),
        next_steps=(
            _SHOW + " The stack shows the line the request was on.",
            "See the requests in flight: `poolwarden requests --pool {pool}`.",
        ),
    ),
    EventType(
        id=2041,
        name="loop_lag",
        level="warning",
        category="request",
        title="A worker's event loop was blocked",
        meaning="An ASGI worker's event loop ran nothing for longer than "
        "`process_model.loop_lag_warning`, so every request of that worker waited. A "
        "watchdog thread in the worker saw it and took the loop thread's stack at that "
        "moment: the message names the innermost line of the app's code and the request "
        "being served, the details carry the whole stack (`stack`), the lag when it was "
        "taken (`lag`) and how long the loop was blocked in all (`blocked`; with `ended` "
        "false, it was still blocked 5 s after it was seen). At most one stall per worker "
        "is reported every 5 s; `skipped` counts the others.",
        causes=(
            "A blocking call inside async code: file or network I/O through a synchronous "
            "library (`requests`, a database driver), `time.sleep`, CPU-heavy work.",
        ),
        next_steps=(
            _SHOW + " The stack shows the line that blocked the loop; move that call to "
            "a thread (`await asyncio.to_thread(...)`) or use an async library.",
            _GROUPS,
        ),
    ),
    # --- configuration -----------------------------------------------------------------
    EventType(
        id=2050,
        name="config_reloaded",
        level="info",
        category="config",
        title="The configuration was reloaded",
        meaning="The configuration file was read again (SIGHUP or `poolwarden config "
        "reload`) and applied. The details list the pools added, removed and changed "
        "and the listeners opened.",
        causes=("`poolwarden config reload` or SIGHUP to the master.",),
        next_steps=("See the result: `poolwarden pools`, `poolwarden config show`.",),
    ),
    EventType(
        id=2051,
        name="config_reload_refused",
        level="warning",
        category="config",
        title="A configuration reload was refused",
        meaning="The configuration file was read again but is invalid; nothing changed and "
        "the running configuration stays. The details list every mistake with its key "
        "path.",
        causes=("A mistake in the edited file.",),
        next_steps=(
            "Check the file without a server: `poolwarden config check FILE`.",
            "Fix it and reload: `poolwarden config reload`.",
        ),
    ),
    # --- WAS numbers --------------------------------------------------------------------
    EventType(
        id=5002,
        name="pool_disabled_rapid_fail",
        level="error",
        category="pool",
        title="A pool was stopped by rapid-fail protection",
        meaning="The pool's workers failed `rapid_fail.max_crashes` times within "
        "`rapid_fail.interval` (5 in 5 minutes by default), so the pool was stopped "
        "rather than restarted in a loop. Every request to it, queued ones included, "
        "gets 503 until an administrator starts it again. The details list the failures "
        "that counted, with their sequence numbers.",
        causes=(
            "A crash that repeats on every start (bad deploy, missing dependency).",
            "A crash triggered by a request that clients keep retrying.",
            "Workers killed from outside or by the OOM killer in a loop.",
        ),
        next_steps=(
            "See the failures that counted: `poolwarden events --pool {pool} --level error`.",
            "Group them by cause: `poolwarden events --groups --pool {pool}`.",
            "Read one of them whole: `poolwarden events show SEQ`.",
            "Break in before the app loads: `poolwarden debug startup {pool} --start`, then "
            "`poolwarden debug connect {pool}` (docs/troubleshooting.md).",
            _START,
        ),
        iis=True,
    ),
    EventType(
        id=5009,
        name="worker_ended_unexpectedly",
        level="error",
        category="worker",
        title="A worker process ended unexpectedly",
        meaning="A worker that poolwarden had not asked to end exited or was killed. The "
        "message says who ended it: the worker itself (an exit status, an exception that "
        "escaped into poolwarden's runtime, or a crash signal such as SIGSEGV) or "
        "another process's signal ('SIGKILL from outside'). The details carry the "
        "evidence: the exit status or signal, the faulthandler dump of every thread for "
        "a crash with the innermost frame of the app's code, the worker's last stdout "
        "and stderr lines, its uptime, requests served, last RSS, and the requests in "
        "flight (those whose response had not started were answered 502 with "
        "`X-Poolwarden-Event: SEQ`). Counts toward rapid-fail protection.",
        causes=(
            "`sys.exit()` or `os._exit()` in the app or a library.",
            "A crash in a native extension (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL).",
            "A signal from another process: a deploy script, a supervisor, `kill`.",
            "The kernel killed it (SIGKILL) and poolwarden cannot tell whether it was the "
            "OOM killer: the details say `oom_killed: null`.",
        ),
        next_steps=(
            _SHOW + " A crash dump shows every thread's Python stack with source lines.",
            _GROUPS,
            "Reproduce with the in-flight request shown in the event.",
        ),
        iis=True,
    ),
    EventType(
        id=5010,
        name="worker_ping_failed",
        level="error",
        category="worker",
        title="A worker did not answer a ping in time and was killed",
        meaning="The worker did not answer a ping within `process_model.ping_response_time`: "
        "its event loop is blocked (a hang). poolwarden sent it SIGABRT, so faulthandler "
        "wrote every thread's stack to its crash file (in the details: where it hung), "
        "then SIGKILL. Counts toward rapid-fail protection.",
        causes=(
            "A deadlock, or a blocking call without a time-out on the worker's loop.",
            "CPU-bound work on the event loop thread of an ASGI app.",
            "The worker is paused in a debugger: switch pinging off for that "
            "(`process_model.pinging_enabled = false`).",
        ),
        next_steps=(
            _SHOW + " The crash dump shows where each thread was.",
            "Catch the next one alive: `poolwarden requests --pool {pool}` and "
            "`poolwarden stack PID`.",
        ),
        iis=True,
    ),
    EventType(
        id=5011,
        name="worker_channel_broken",
        level="error",
        category="worker",
        title="The channel to a worker broke while it was alive",
        meaning="The worker's control channel closed or failed while the process still "
        "ran, so poolwarden can no longer hand it connections or ping it; it was killed. "
        "Counts toward rapid-fail protection.",
        causes=(
            "The app closed file descriptors it does not own (`os.closerange`, a "
            "daemonizing library).",
            "A fork in the app where the child kept running poolwarden's runtime.",
        ),
        next_steps=(_SHOW, _GROUPS),
        iis=True,
    ),
    EventType(
        id=5012,
        name="worker_startup_time_limit",
        level="error",
        category="worker",
        title="A worker exceeded the start-up time limit",
        meaning="The worker was not ready within `process_model.startup_time_limit` (90 s "
        "by default) and was killed (SIGABRT for a stack dump, then SIGKILL). The "
        "details carry the dump: where the start-up was stuck. Counts toward rapid-fail "
        "protection.",
        causes=(
            "The app waits at import for a service that does not answer (no time-out).",
            "Heavy work at import (loading models, warming caches) longer than the limit.",
            "A `launch_wrapper` that slows the worker down (valgrind, strace): raise the limit.",
        ),
        next_steps=(
            _SHOW + " The crash dump shows where the start-up was stuck.",
            "Raise `process_model.startup_time_limit` if the start-up is slow but sound.",
        ),
        iis=True,
    ),
    EventType(
        id=5013,
        name="worker_shutdown_time_limit",
        level="warning",
        category="worker",
        title="A worker exceeded the shut-down time limit and was killed",
        meaning="A worker asked to end (recycle, stop, shutdown) did not finish its "
        "requests within `process_model.shutdown_time_limit` and was killed with "
        "SIGKILL; its unfinished requests were cut off. Does not count toward rapid-fail "
        "protection.",
        causes=(
            "Long requests (uploads, streaming, long polling) still running.",
            "A request stuck on a slow service.",
            "An ASGI lifespan shutdown or `atexit` handler that blocks.",
        ),
        next_steps=(
            _SHOW + " The in-flight requests show what was still running.",
            "Raise `process_model.shutdown_time_limit` if such requests are expected.",
        ),
        iis=True,
    ),
    EventType(
        id=5015,
        name="orphan_action_failed",
        level="warning",
        category="worker",
        title="The orphan action for a worker could not be run",
        meaning="`rapid_fail.orphan_action_command` could not be started for an orphaned "
        "worker, or it failed or timed out. The worker itself is still kept stopped.",
        causes=("The command does not exist, is not executable, or exited non-zero.",),
        next_steps=(
            _SHOW + " The details carry the command's error and output.",
            "Run the command by hand with the worker's pid to see it fail.",
        ),
        iis=True,
    ),
    EventType(
        id=5022,
        name="worker_create_failed",
        level="error",
        category="worker",
        title="A worker process could not be created",
        meaning="Starting the worker process itself failed, before any app code ran: the "
        "Python executable or the launch wrapper is missing, the working directory does "
        "not exist, the user cannot be switched to, or the system is out of processes or "
        "file descriptors. The details carry the command and the operating system's error.",
        causes=(
            "A wrong `python`, `working_dir`, `user` or `group` in the pool's configuration.",
            "Resource limits: `ulimit -u` (processes) or `ulimit -n` (files).",
        ),
        next_steps=(
            _SHOW,
            "Check the pool's settings: `poolwarden config show`.",
        ),
        iis=True,
    ),
    EventType(
        id=5074,
        name="recycle_time",
        level="info",
        category="recycle",
        title="A worker is recycled: it reached its time limit",
        meaning="The worker has run for `recycling.time` (29 h by default), so a "
        "replacement is started and the old worker drains. Its exit follows as 2023.",
        causes=("Periodic recycling, as configured.",),
        next_steps=("Nothing; change `recycling.time` to recycle less or more often.",),
        iis=True,
    ),
    EventType(
        id=5075,
        name="recycle_requests",
        level="info",
        category="recycle",
        title="A worker is recycled: it reached its request limit",
        meaning="The worker served `recycling.requests` requests, so a replacement is "
        "started and the old worker drains.",
        causes=("Recycling by request count, as configured.",),
        next_steps=("Nothing; change `recycling.requests` to adjust.",),
        iis=True,
    ),
    EventType(
        id=5076,
        name="recycle_schedule",
        level="info",
        category="recycle",
        title="A worker is recycled: a scheduled time was reached",
        meaning="A time in `recycling.schedule` was reached; the pool's workers are replaced.",
        causes=("Scheduled recycling, as configured.",),
        next_steps=("Nothing; change `recycling.schedule` to adjust.",),
        iis=True,
    ),
    EventType(
        id=5077,
        name="recycle_memory",
        level="info",
        category="recycle",
        title="A worker is recycled: it exceeded its memory limit",
        meaning="The worker's resident memory (RSS) exceeded `recycling.memory`; a "
        "replacement is started and the old worker drains. The details give the sample.",
        causes=("The app's memory grows over time (caches, fragmentation, a leak).",),
        next_steps=("If it recycles often, look for a leak; watch `poolwarden wp --pool {pool}`.",),
        iis=True,
    ),
    EventType(
        id=5078,
        name="recycle_unhealthy",
        level="info",
        category="recycle",
        title="A worker is recycled: it is unhealthy (a request ran past its time-out)",
        meaning="The worker is replaced with overlap because it is no longer sound: a "
        "request ran past `process_model.request_timeout` with `request_timeout_action = "
        '"recycle"` (event 2040 has the request and its stack). Written when '
        "`recycling.log_event_on_recycle` lists `unhealthy`.",
        causes=("A request stuck past `request_timeout` (a lock, a call with no time-out).",),
        next_steps=(_SHOW, "Event 2040 just before it shows the stuck request's stack."),
        iis=True,
    ),
    EventType(
        id=5079,
        name="recycle_administrator",
        level="info",
        category="recycle",
        title="A worker is recycled: an administrator asked",
        meaning="`poolwarden pool recycle` (or the control API) recycled the pool.",
        causes=("Someone ran `poolwarden pool recycle {pool}`.",),
        next_steps=("Nothing.",),
        iis=True,
    ),
    EventType(
        id=5080,
        name="recycle_config_change",
        level="info",
        category="recycle",
        title="A worker is recycled: the pool's configuration changed",
        meaning="A reload changed the pool's settings, so its workers are replaced "
        "(`recycling.on_config_change`).",
        causes=("`poolwarden config reload` or SIGHUP after an edit of this pool.",),
        next_steps=("Nothing.",),
        iis=True,
    ),
    EventType(
        id=5093,
        name="recycle_failed",
        level="warning",
        category="recycle",
        title="An overlapped recycle failed; the old workers keep serving",
        meaning="A replacement worker could not start during a recycle, so the recycle was "
        "abandoned and the old workers keep serving (planned work never makes things "
        "worse). The replacement's own failure is a separate event (2022, 5012, 5022) "
        "named in the details.",
        causes=("The new code or configuration cannot start (a bad deploy).",),
        next_steps=(
            "Read why the replacement failed: `poolwarden events --pool {pool} --id 2022`.",
            "Fix it, then recycle again: `poolwarden pool recycle {pool}`.",
        ),
        iis=True,
    ),
    EventType(
        id=5117,
        name="recycle_private_memory",
        level="info",
        category="recycle",
        title="A worker is recycled: it exceeded its private memory limit",
        meaning="The worker's private memory (USS: what its exit would free) exceeded "
        "`recycling.private_memory`; a replacement is started and the old worker drains.",
        causes=("The app's memory grows over time (caches, fragmentation, a leak).",),
        next_steps=("If it recycles often, look for a leak; watch `poolwarden wp --pool {pool}`.",),
        iis=True,
    ),
    EventType(
        id=5127,
        name="worker_malformed_data",
        level="error",
        category="worker",
        title="A worker sent malformed data on its channel and was killed",
        meaning="A message from the worker could not be decoded, so the worker is no "
        "longer trusted and was killed. Counts toward rapid-fail protection.",
        causes=(
            "The app wrote to a file descriptor it does not own (the channel's).",
            "Master and worker from different poolwarden versions.",
        ),
        next_steps=(_SHOW, _GROUPS),
        iis=True,
    ),
    EventType(
        id=5186,
        name="worker_idle_shutdown",
        level="info",
        category="worker",
        title="A worker is shut down for inactivity",
        meaning="The worker served nothing for `process_model.idle_timeout`; it is drained "
        "and a new one starts on demand. Its exit follows as 2023.",
        causes=("No traffic to the pool.",),
        next_steps=("Nothing; set `process_model.idle_timeout = 0` to keep workers.",),
        iis=True,
    ),
)

CATALOG: dict[int, EventType] = {entry.id: entry for entry in _ENTRIES}
KNOWN_IDS: frozenset[int] = frozenset(CATALOG)
BY_NAME: dict[str, EventType] = {entry.name: entry for entry in _ENTRIES}

# The ids poolwarden's code names; the classifier uses these, never bare numbers.
SERVER_STARTED = 2000
SERVER_STOPPING = 2001
SERVER_STOPPED = 2002
POOL_STATE_CHANGED = 2010
POOL_STARTED_BY_ADMINISTRATOR = 2011
POOL_STOPPED_BY_ADMINISTRATOR = 2012
POOL_STARTUP_FAILED = 2013
AUTO_SHUTDOWN_COMMAND_RAN = 2014
AUTO_SHUTDOWN_COMMAND_FAILED = 2015
WORKER_STARTED = 2020
WORKER_READY = 2021
WORKER_STARTUP_FAILED = 2022
WORKER_EXITED = 2023
WORKER_OOM_KILLED = 2024
APP_THREAD_EXCEPTION = 2025
WORKER_MEMORY_HARD_LIMIT = 2026
WORKER_ORPHANED = 2027
REQUEST_TIMEOUT = 2040
LOOP_LAG = 2041
CONFIG_RELOADED = 2050
CONFIG_RELOAD_REFUSED = 2051
POOL_DISABLED_RAPID_FAIL = 5002
WORKER_ENDED_UNEXPECTEDLY = 5009
WORKER_PING_FAILED = 5010
WORKER_CHANNEL_BROKEN = 5011
WORKER_STARTUP_TIME_LIMIT = 5012
WORKER_SHUTDOWN_TIME_LIMIT = 5013
ORPHAN_ACTION_FAILED = 5015
WORKER_CREATE_FAILED = 5022
RECYCLE_TIME = 5074
RECYCLE_REQUESTS = 5075
RECYCLE_SCHEDULE = 5076
RECYCLE_MEMORY = 5077
RECYCLE_UNHEALTHY = 5078
RECYCLE_ADMINISTRATOR = 5079
RECYCLE_CONFIG_CHANGE = 5080
RECYCLE_FAILED = 5093
RECYCLE_PRIVATE_MEMORY = 5117
WORKER_MALFORMED_DATA = 5127
WORKER_IDLE_SHUTDOWN = 5186

RECYCLE_EVENT_IDS: dict[RecycleReason, int] = {
    "time": RECYCLE_TIME,
    "requests": RECYCLE_REQUESTS,
    "schedule": RECYCLE_SCHEDULE,
    "memory": RECYCLE_MEMORY,
    "unhealthy": RECYCLE_UNHEALTHY,
    "on_demand": RECYCLE_ADMINISTRATOR,
    "config_change": RECYCLE_CONFIG_CHANGE,
    "private_memory": RECYCLE_PRIVATE_MEMORY,
}
"""The event a recycle writes when poolwarden decides it, by reason."""


class UnknownEventId(LookupError):
    """An id (or name) that is not in the catalog."""

    def __init__(self, key: int | str) -> None:
        super().__init__(f"no event {key!r} in the catalog")
        self.key = key


def lookup(key: int | str) -> EventType:
    """The entry for an id (`5009`, `"5009"`) or a name (`"worker_ended_unexpectedly"`)."""
    if isinstance(key, str):
        text = key.strip()
        if text.isdigit():
            key = int(text)
        elif text in BY_NAME:
            return BY_NAME[text]
        else:
            raise UnknownEventId(key)
    try:
        return CATALOG[key]
    except KeyError:
        raise UnknownEventId(key) from None


PLACEHOLDERS = {"seq": "SEQ", "pid": "PID", "pool": "POOL"}
"""What `explain` shows for the next steps' placeholders."""


def fill(text: str, values: dict[str, object] | None = None) -> str:
    """`text` with {seq}, {pid}, {pool} filled in from `values` (an event's),
    or shown as SEQ, PID, POOL where a value is missing."""
    filled = dict(PLACEHOLDERS)
    for key, value in (values or {}).items():
        if value is not None:
            filled[key] = str(value)
    return text.format_map(filled)


def next_steps(entry: EventType, values: dict[str, object] | None = None) -> list[str]:
    """The entry's next steps, filled in (`fill`)."""
    return [fill(step, values) for step in entry.next_steps]


def causes(entry: EventType, values: dict[str, object] | None = None) -> list[str]:
    """The entry's usual causes, filled in (`fill`)."""
    return [fill(cause, values) for cause in entry.causes]


def explain(key: int | str) -> str:
    """The entry as plain text, for `poolwarden events explain ID`.

    Raises `UnknownEventId` for an id the catalog lacks.
    """
    entry = lookup(key)
    source = "same number and meaning as IIS's WAS event" if entry.iis else "poolwarden"
    lines = [
        f"{entry.id} {entry.name} ({entry.level})",
        entry.title,
        "",
    ]
    if entry.reserved:
        lines += ["Reserved: nothing writes this event yet.", ""]
    lines += [_wrap(entry.meaning), "", "Usual causes:"]
    lines += [f"  - {_wrap(cause, indent='    ')}" for cause in causes(entry)]
    lines += ["", "What to do next:"]
    lines += [f"  - {_wrap(step, indent='    ')}" for step in next_steps(entry)]
    lines += ["", f"Source: {source}; category: {entry.category}."]
    return "\n".join(lines)


def _wrap(text: str, width: int = 88, indent: str = "") -> str:
    """Wrap prose for a terminal; the first line's indent is the caller's."""
    return textwrap.fill(
        text, width=width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )
