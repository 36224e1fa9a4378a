"""The master: one event loop running the front end and the pools.

It opens the listeners first (a taken port fails before anything starts),
starts the pools, and then only reacts: to connections, to worker messages
and exits, to the control API, and to signals. Signal handlers only record
what was asked; the loop does the work.

```
 SIGTERM/SIGINT ─▶ shutdown    SIGHUP ─▶ reload the config file
 control.sock ───▶ ControlTarget methods (pools, workers, requests, stacks, reload)
 listeners ──────▶ FrontEnd ──route──▶ Pool ──▶ WorkerProcess
```

Shutdown: SIGTERM or SIGINT stops accepting, answers half-read heads, lets
every worker finish what it is serving (up to the pool's shut-down time
limit), then exits 0. A second SIGINT kills the workers and exits at once.

Reload (SIGHUP or `poolwarden config reload`): an invalid file is refused
with its errors and the running configuration stays. Otherwise new bindings
open, new pools start, removed ones drain and stop, pools whose settings
changed are recycled with overlap, and unchanged pools are not touched.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import time
from typing import Any

import msgspec
import psutil

from poolwarden import __version__
from poolwarden import channel as ch
from poolwarden.config import Config, ConfigError, diff_pools, format_issues, load_config
from poolwarden.events import catalog
from poolwarden.http.head import RequestHead
from poolwarden.master import core_dumps
from poolwarden.master.binding import BindError, Listener, close_listener, open_listener
from poolwarden.master.control import (
    ControlServer,
    ControlSocketError,
    ControlSocketInUse,
    socket_path,
    start_control_server,
)
from poolwarden.master.event_log import PRUNE_EVERY, EventLog
from poolwarden.master.frontend import FrontEnd, HealthPath, Route
from poolwarden.master.frontend_log import FrontEndLog
from poolwarden.master.health import Readiness, facts_of, judge
from poolwarden.master.pool import Pool, PoolState, StopReason
from poolwarden.master.worker_process import WorkerProcess
from poolwarden.routing import RoutingTable
from poolwarden.scoreboard import Phase
from poolwarden.settings import PoolSettings, ServerSettings
from poolwarden.stacks import TASKS_BLOCKED_NOTE, TaskStack, ThreadStack, render_worker

log = logging.getLogger("poolwarden")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_APP_FAILED = 3
"""`poolwarden run` exits with this when the app cannot start (fail fast)."""

FRONT_END_LOG = "frontend.log"
CHECK_EVERY = 1.0
"""Seconds between looks at every worker's recycle limits and idleness."""
RSS_SAMPLE_EVERY = 2.0
"""Seconds between samples of every worker's RSS."""


def private_memory(pid: int) -> int | None:
    """A process's USS: what it alone holds (costlier to read than RSS)."""
    try:
        uss: int = psutil.Process(pid).memory_full_info().uss
    except psutil.Error:
        return None
    return uss


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Master:
    """Runs one server: listeners, a front end, its pools, the control API.

    With a `config` it routes by site and application; without one (`poolwarden
    run`) every request goes to its single pool.
    """

    def __init__(
        self,
        server: ServerSettings,
        pools: list[PoolSettings],
        *,
        config: Config | None = None,
        config_path: str | None = None,
    ) -> None:
        self.server = server
        self.pool_settings = pools
        self.config = config
        self.config_path = config_path
        self.table: RoutingTable | None = config.routing_table() if config else None
        self.pools: dict[str, Pool] = {}
        self.listeners: list[Listener] = []
        self.exit_code = EXIT_OK
        self.stopping = False
        self.started_at = time.time()
        self._interrupts = 0
        self._single_route: Route | None = None
        self._processes: dict[int, psutil.Process] = {}

    # start and stop

    def run(self) -> int:
        try:
            os.makedirs(os.path.join(self.server.state_dir, "crash"), exist_ok=True)
        except OSError as error:
            print(
                f"poolwarden: cannot use the state directory {self.server.state_dir}: "
                f"{error.strerror or error}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        try:
            self.listeners = [
                open_listener(text, self.server.backlog) for text in self.server.binds
            ]
        except BindError as error:
            for listener in self.listeners:
                close_listener(listener)
            print(f"poolwarden: {error}", file=sys.stderr)
            return EXIT_ERROR
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(self._main(loop))
        finally:
            for listener in self.listeners:
                close_listener(listener)
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> int:
        self.loop = loop
        self.finished: asyncio.Future[None] = loop.create_future()
        # Workers write the access log straight to the master's stdout.
        self.access_log_fd = os.dup(sys.stdout.fileno())
        self.events = EventLog.open(self.server.state_dir, to_stdout=self.server.events_stdout)
        self.frontend_log = FrontEndLog(
            os.path.join(self.server.state_dir, FRONT_END_LOG)
            if self.server.front_end_log
            else None,
            self.server.front_end_log_max_size,
            self.server.front_end_log_backups,
        )
        for settings in self.pool_settings:
            self.pools[settings.name] = self._new_pool(settings)
        self.frontend = FrontEnd(
            loop,
            self.listeners,
            self.server.head_limits,
            self._route,
            self.frontend_log,
            self._health_path(self.server.health_path),
        )
        try:
            control = await self._start_control(loop)
        except ControlSocketInUse as error:
            print(f"poolwarden: {error}", file=sys.stderr)
            os.close(self.access_log_fd)
            self.frontend_log.close()
            self.events.close()
            return EXIT_ERROR
        self.events.emit(
            catalog.SERVER_STARTED,
            f"poolwarden {__version__} started (pid {os.getpid()})",
            details={
                "bindings": [listener.text for listener in self.listeners],
                "pools": list(self.pools),
                "config_path": self.config_path,
            },
        )
        self._timers = [
            loop.call_later(PRUNE_EVERY, self._prune),
            loop.call_later(RSS_SAMPLE_EVERY, self._sample_rss),
            loop.call_later(CHECK_EVERY, self._check_workers),
        ]
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal, signum)
        for pool in list(self.pools.values()):
            pool.start()
        if not self.stopping:  # a pool that cannot spawn at all fails fast
            self.frontend.start()
        for listener in self.listeners:
            log.info("listening on %s", listener.url)
        try:
            await self.finished
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if control is not None:
                control.close()
                await control.wait_closed()
            os.close(self.access_log_fd)
            self.frontend_log.close()
            for timer in self._timers:
                timer.cancel()
            self.events.emit(
                catalog.SERVER_STOPPED, f"poolwarden stopped (exit status {self.exit_code})"
            )
            self.events.close()
        return self.exit_code

    def _check_workers(self) -> None:
        """Recycle limits and idle time-outs, once a second."""
        now = time.monotonic()
        for pool in list(self.pools.values()):
            pool.check_workers(now)
        self._timers[2] = self.loop.call_later(CHECK_EVERY, self._check_workers)

    def _sample_rss(self) -> None:
        """Every worker's resident memory, kept so that the event of a worker
        killed from outside (or by the OOM killer) can say how big it was."""
        for pool in self.pools.values():
            for worker in pool.workers:
                if worker.returncode is None:
                    worker.last_rss = self._resources(worker.python_pid)[0]
                    if pool.settings.recycle_private_memory:
                        worker.last_uss = private_memory(worker.python_pid)
        self._timers[1] = self.loop.call_later(RSS_SAMPLE_EVERY, self._sample_rss)

    def _prune(self) -> None:
        self.events.prune()
        self._timers[0] = self.loop.call_later(PRUNE_EVERY, self._prune)

    async def _start_control(self, loop: asyncio.AbstractEventLoop) -> ControlServer | None:
        """The control API on STATE_DIR/control.sock.

        Another live server on the same state directory is fatal (two
        servers would fight over its sockets, crash files and logs); any
        other failure leaves this server running without the API, and says so.
        """
        path = socket_path(self.server.state_dir)
        try:
            return await start_control_server(loop, path, ControlAdapter(self))
        except ControlSocketInUse:
            raise
        except ControlSocketError as error:
            log.error("control API not available at %s: %s", path, error)
            return None

    def _new_pool(self, settings: PoolSettings) -> Pool:
        if settings.core_dumps and (why := core_dumps.system_warning()):
            log.warning("pool %s: core_dumps is on but %s", settings.name, why)
        return Pool(
            self.loop,
            settings,
            self.server,
            access_log_fd=self.access_log_fd,
            on_startup_failure=self._on_startup_failure,
            on_stopped=self._on_pool_stopped,
            on_refused=self.frontend_log.write_refused,
            on_hand_back=self._on_hand_back,
            routes=self.table.to_data() if self.table is not None else None,
            events=self.events,
        )

    def _on_hand_back(self, sock: socket.socket, message: ch.HandBack) -> None:
        """A worker gave a keep-alive connection back: route it again."""
        self.frontend.redispatch(
            sock, (message.peer_host, message.peer_port), message.binding, message.buffered
        )

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self.loop.create_task(self._reload_from_signal())
            return
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                log.warning("second interrupt: stopping at once")
                self.exit_code = EXIT_ERROR
                for pool in self.pools.values():
                    pool.kill()
                return
        self.shutdown()
        # Said once the listeners are closed, so whoever reads it may rely on that.
        log.info("received %s: finishing the requests in flight", signal.Signals(signum).name)

    def shutdown(self, *, kill: bool = False) -> None:
        if self.stopping:
            if kill:
                for pool in self.pools.values():
                    pool.kill()
            return
        self.stopping = True
        self.events.emit(catalog.SERVER_STOPPING, "the server is stopping")
        self.frontend.stop_accepting()
        self.frontend.abandon_pending()
        for listener in self.listeners:
            close_listener(listener)
        self.listeners = []
        for pool in list(self.pools.values()):
            if kill:
                pool.kill()
            else:
                pool.drain(pool.settings.shutdown_time_limit, StopReason.SHUTDOWN)
        self._maybe_finished()

    def _on_startup_failure(self, pool: Pool, failure: ch.StartupFailure) -> None:
        if self.server.on_startup_failure == "exit" and pool.dispatched == 0 and not self.stopping:
            sys.stderr.write(f"poolwarden: {failure.headline()}\n")
            if failure.traceback:
                sys.stderr.write(failure.traceback)
            sys.stderr.flush()
            self.exit_code = EXIT_APP_FAILED
            self.shutdown(kill=True)

    def _on_pool_stopped(self, pool: Pool) -> None:
        if pool.stop_reason is StopReason.REMOVED and self.pools.get(pool.name) is pool:
            del self.pools[pool.name]
            log.info("pool %s: removed", pool.name)
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if (
            self.stopping
            and all(pool.state is PoolState.STOPPED for pool in self.pools.values())
            and not self.finished.done()
        ):
            self.finished.set_result(None)

    # routing

    def _route(self, listener: Listener, head: RequestHead) -> Route | None:
        table = self.table
        if table is None:
            route = self._single_route
            if route is None:
                pool = next(iter(self.pools.values()))
                route = self._single_route = Route(pool.dispatch, "")
            return route
        match = table.route(listener.text, head.host, head.path.decode("latin-1"))
        if match is None:
            return None
        target = self.pools.get(match.application.pool)
        if target is None:
            return None
        return Route(target.dispatch, match.script_name, match.site.name)

    def _health_path(self, path: str | None) -> HealthPath | None:
        """What the front end answers `server.health_path` with (None: not set)."""
        return None if path is None else HealthPath(path, self.readiness)

    # reload

    async def _reload_from_signal(self) -> None:
        try:
            await self.reload_config()
        except ConfigError:
            pass  # logged by reload_config
        except ValueError as error:
            log.warning("SIGHUP ignored: %s", error)

    async def reload_config(self) -> dict[str, Any]:
        """Apply the config file again; the running config stays if it is invalid."""
        if self.config_path is None or self.config is None:
            raise ValueError("this server was started without a config file (poolwarden run)")
        if self.stopping:
            raise ValueError("the server is shutting down")
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            log.error(
                "config reload refused, the running configuration stays:\n%s",
                format_issues(error.errors),
            )
            self.events.emit(
                catalog.CONFIG_RELOAD_REFUSED,
                f"config reload refused: {len(error.errors)} error(s) in {self.config_path}",
                details={"issues": [[i.path, i.message] for i in error.errors]},
            )
            raise
        new_server = new.server_settings()
        opened = self._open_new_listeners(new_server.binds)
        diff = diff_pools(self.config, new)
        for name in diff.removed:
            self.pools[name].drain(
                self.pools[name].settings.shutdown_time_limit, StopReason.REMOVED
            )
        for name in diff.changed:
            settings = new.pool_settings(name)
            pool = self.pools[name]
            if new.pools[name].recycling.on_config_change:
                pool.update_settings(settings)
            else:
                pool.settings = settings  # applies to the next workers started
        for name in diff.added:
            pool = self._new_pool(new.pool_settings(name))
            self.pools[name] = pool
            pool.start()
        self.table = new.routing_table()
        routes = self.table.to_data()
        for pool in self.pools.values():
            pool.set_routes(routes)
        self._close_old_listeners(new_server.binds)
        self.frontend.limits = new_server.head_limits
        if new_server.health_path != self.config.server.health_path:
            self.frontend.health = self._health_path(new_server.health_path)
            log.info("health path: %s", new_server.health_path or "none")
        self.config = new
        result = {
            "added": diff.added,
            "removed": diff.removed,
            "changed": diff.changed,
            "unchanged": diff.unchanged,
            "bindings_opened": [listener.text for listener in opened],
        }
        self.events.emit(
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

    def _open_new_listeners(self, binds: list[str]) -> list[Listener]:
        current = {listener.text for listener in self.listeners}
        opened: list[Listener] = []
        try:
            for text in binds:
                if text not in current:
                    opened.append(open_listener(text, self.server.backlog))
        except BindError as error:
            for listener in opened:
                close_listener(listener)
            log.error("config reload refused: %s", error)
            raise ConfigError([], source=self.config_path) from error
        for listener in opened:
            self.frontend.add_listener(listener)
            log.info("listening on %s", listener.url)
        return opened

    def _close_old_listeners(self, binds: list[str]) -> None:
        for listener in list(self.listeners):
            if listener.text not in binds:
                self.frontend.remove_listener(listener)
                close_listener(listener)
                log.info("stopped listening on %s", listener.url)

    # the control API's view of the server (poolwarden.master.control.ControlTarget)

    def server_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "state_dir": os.path.abspath(self.server.state_dir),
            "config_path": self.config_path,
            "bindings": [listener.text for listener in self.listeners],
            "draining": self.stopping,
        }

    def readiness(self) -> Readiness:
        """The one judgement behind `GET /v1/health` and the health path."""
        facts = {name: facts_of(pool) for name, pool in self.pools.items()}
        return judge(facts, draining=self.stopping)

    def health(self) -> dict[str, Any]:
        return self.readiness().control_body()

    def pools_status(self) -> list[dict[str, Any]]:
        return [pool.status() for pool in self.pools.values()]

    def pool(self, name: str) -> dict[str, Any]:
        return self.pools[name].status()

    async def pool_action(self, name: str, action: str) -> dict[str, Any]:
        pool = self.pools[name]
        if self.stopping:
            raise ValueError("the server is shutting down")
        if action == "start":
            pool.resume()
        elif action == "stop":
            pool.stop()
        elif action == "recycle":
            pool.recycle()
        else:
            raise ValueError(f"unknown action {action!r}")
        return pool.status()

    def debug_startup(
        self,
        name: str,
        adapter: str | None,
        keep: bool,
        start: bool,
        wrapper: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        pool = self.pools[name]
        if self.stopping:
            raise ValueError("the server is shutting down")
        if adapter == "debugpy" and importlib.util.find_spec("debugpy") is None:
            raise ValueError("debugpy is not installed: pip install debugpy (or use pdb)")
        if wrapper:
            search = pool.settings.env.get("PATH", os.environ.get("PATH", os.defpath))
            if shutil.which(wrapper[0], path=search) is None:
                raise ValueError(f"the wrapper's program {wrapper[0]!r} is not found on PATH")
        if start and pool.state.value in ("disabled", "stopped"):
            pool.resume()
        pool.arm_debug(adapter, keep, wrapper)
        return pool.debug_status()

    def debug_off(self, name: str) -> dict[str, Any]:
        pool = self.pools[name]
        pool.disarm_debug()
        return pool.debug_status()

    def debug_status(self) -> dict[str, Any]:
        return {"pools": [pool.debug_status() for pool in self.pools.values()]}

    def attach(self, pid: int) -> dict[str, Any]:
        for name, pool in self.pools.items():
            for worker in pool.workers:
                if worker.pid == pid and worker.returncode is None:
                    if worker.state.value != "ready":
                        raise ValueError(f"worker {pid} is {worker.state.value}, not ready")
                    worker.attach()
                    return {"pid": pid, "pool": name}
        raise KeyError(pid)

    def workers(self, pool: str | None) -> list[dict[str, Any]]:
        now = time.time()
        rows = []
        for name, each in self.pools.items():
            if pool is not None and name != pool:
                continue
            for worker in [*each.workers, *each.orphans]:
                if worker.returncode is not None:
                    continue
                rss, cpu = self._resources(worker.python_pid)
                rows.append(
                    {
                        "pid": worker.pid,
                        "python_pid": worker.python_pid,
                        "pool": name,
                        "state": "retiring" if worker.retiring else worker.state.value,
                        "started_at": worker.started_wall,
                        "uptime": now - worker.started_wall,
                        "requests_served": worker.scoreboard.served(),
                        "active_requests": worker.busy_count(),
                        "rss": rss,
                        "cpu_percent": cpu,
                    }
                )
        return rows

    def reap_worker(self, pid: int) -> dict[str, Any]:
        for name, pool in self.pools.items():
            if any(worker.pid == pid for worker in pool.workers):
                raise ValueError(
                    f"worker {pid} of pool {name!r} is serving, not an orphan; "
                    f"`poolwarden pool recycle {name}` replaces workers"
                )
            if pool.reap_orphans(pid):
                return {"pid": pid, "pool": name, "reaped": True}
        raise KeyError(pid)

    def _resources(self, pid: int) -> tuple[int | None, float | None]:
        """RSS and CPU % since the last look (psutil needs two samples)."""
        try:
            process = self._processes.get(pid)
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            return process.memory_info().rss, process.cpu_percent(interval=None)
        except psutil.Error:
            self._processes.pop(pid, None)
            return None, None

    def requests(self, pool: str | None, min_elapsed: float) -> list[dict[str, Any]]:
        now = time.time()
        rows: list[dict[str, Any]] = []
        for name, each in self.pools.items():
            if pool is not None and name != pool:
                continue
            for worker in each.workers:
                if worker.returncode is not None:
                    continue
                for slot in worker.scoreboard.busy():
                    elapsed = max(0.0, now - slot.started)
                    if elapsed < min_elapsed:
                        continue
                    rows.append(
                        {
                            "pid": worker.pid,
                            "pool": name,
                            "method": slot.method,
                            "path": slot.path,
                            "client": slot.client,
                            "elapsed": elapsed,
                            "phase": "app" if slot.phase is Phase.APP else "responding",
                            "status": slot.status or None,
                        }
                    )
        rows.sort(key=lambda row: -row["elapsed"])
        return rows

    def config_dict(self) -> dict[str, Any] | None:
        return self.config.to_dict() if self.config is not None else None

    async def worker_stack(self, pid: int) -> dict[str, Any]:
        for name, pool in self.pools.items():
            for worker in pool.workers:
                if worker.pid == pid and worker.returncode is None:
                    return await self._stack_of(name, worker)
        raise KeyError(pid)

    async def pool_stack(self, name: str) -> dict[str, Any]:
        live = [w for w in self.pools[name].workers if w.pid > 0 and w.returncode is None]
        answers = await asyncio.gather(*(self._stack_of(name, worker) for worker in live))
        return {"pool": name, "workers": list(answers)}

    async def _stack_of(self, pool: str, worker: WorkerProcess) -> dict[str, Any]:
        """One worker's stacks. The thread dump (faulthandler, no GIL needed)
        and an ASGI worker's task dump (from its loop, 1 s at most) are taken
        at the same moment, so a blocked loop shows in the threads."""
        tasks: list[TaskStack] | None = None
        note = None
        if worker.interface == "asgi":
            captured, tasks = await asyncio.gather(worker.capture_stacks(), worker.task_stacks())
            note = TASKS_BLOCKED_NOTE if tasks is None else None
        else:
            captured = await worker.capture_stacks()
        threads = captured.threads
        return {
            "pid": worker.pid,
            "pool": pool,
            "interface": worker.interface or None,
            "via": captured.via,
            "threads": [_thread_dict(thread) for thread in threads],
            "tasks": None if tasks is None else [msgspec.to_builtins(task) for task in tasks],
            "tasks_note": note,
            "text": render_worker(threads, tasks, note),
        }


def _thread_dict(thread: ThreadStack) -> dict[str, Any]:
    """A thread as the API shows it: `name` only when it is known."""
    data: dict[str, Any] = msgspec.to_builtins(thread)
    if not thread.name:
        del data["name"]
    return data


class ControlAdapter:
    """The master as the control API sees it (`control.ControlTarget`)."""

    def __init__(self, master: Master) -> None:
        self._master = master

    def server_info(self) -> dict[str, Any]:
        return self._master.server_info()

    def health(self) -> dict[str, Any]:
        return self._master.health()

    def pools(self) -> list[dict[str, Any]]:
        return self._master.pools_status()

    def pool(self, name: str) -> dict[str, Any]:
        return self._master.pool(name)

    async def pool_action(self, name: str, action: str) -> dict[str, Any]:
        return await self._master.pool_action(name, action)

    def debug_startup(
        self,
        name: str,
        adapter: str | None,
        keep: bool,
        start: bool,
        wrapper: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        return self._master.debug_startup(name, adapter, keep, start, wrapper)

    def debug_off(self, name: str) -> dict[str, Any]:
        return self._master.debug_off(name)

    def debug_status(self) -> dict[str, Any]:
        return self._master.debug_status()

    def attach(self, pid: int) -> dict[str, Any]:
        return self._master.attach(pid)

    def workers(self, pool: str | None) -> list[dict[str, Any]]:
        return self._master.workers(pool)

    def requests(self, pool: str | None, min_elapsed: float) -> list[dict[str, Any]]:
        return self._master.requests(pool, min_elapsed)

    def reap_worker(self, pid: int) -> dict[str, Any]:
        return self._master.reap_worker(pid)

    def config(self) -> dict[str, Any] | None:
        return self._master.config_dict()

    async def reload_config(self) -> dict[str, Any]:
        return await self._master.reload_config()

    async def worker_stack(self, pid: int) -> dict[str, Any]:
        return await self._master.worker_stack(pid)

    async def pool_stack(self, name: str) -> dict[str, Any]:
        return await self._master.pool_stack(name)
