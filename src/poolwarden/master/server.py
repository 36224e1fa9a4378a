"""The master: one event loop running the front end and the pools.

It opens the listeners first (a taken port fails before anything starts),
starts the pools, and then only reacts: to connections, to worker messages
and exits, to the control API, and to signals. Signal handlers only record
what was asked; the loop does the work.

```
 SIGTERM/SIGINT ─▶ Shutdown (shutdown.py)    SIGHUP ─▶ reload the config file (reload.py)
 control.sock ───▶ ControlAdapter ─▶ Master: pools, debugging, reload
                                    └▶ WorkersView (workers_view.py): workers, requests, stacks
 ListenerSet (listeners.py) ─▶ FrontEnd ──route──▶ Pool ──▶ WorkerProcess
 timers: recycle limits and idleness (Pool.check_workers), RSS (ResourceMeter), event log pruning
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
import socket
import sys
import time
from typing import Any

from poolwarden import __version__
from poolwarden import channel as ch
from poolwarden.config import Config, ConfigError
from poolwarden.events import catalog
from poolwarden.http.head import RequestHead
from poolwarden.master import core_dumps
from poolwarden.master.binding import BindError, Listener
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
from poolwarden.master.listeners import ListenerSet
from poolwarden.master.pool import Pool, StopReason
from poolwarden.master.reload import apply_pool_changes, read_new_config, report_reload
from poolwarden.master.resources import ResourceMeter
from poolwarden.master.shutdown import EXIT_APP_FAILED, EXIT_ERROR, Shutdown
from poolwarden.master.startup_retries import StartupRetries
from poolwarden.master.workers_view import WorkersView
from poolwarden.routing import RoutingTable
from poolwarden.settings import PoolSettings, ServerSettings

log = logging.getLogger("poolwarden")

FRONT_END_LOG = "frontend.log"
CHECK_EVERY = 1.0
"""Seconds between looks at every worker's recycle limits and idleness."""
RSS_SAMPLE_EVERY = 2.0
"""Seconds between samples of every worker's RSS."""


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
        self._listeners = ListenerSet(server.backlog)
        self._shutdown = Shutdown(self.pools, self._listeners)
        self._startup_retries: dict[str, StartupRetries] = {}
        """Fail-fast's count of each pool's failed starts (`run`)."""
        self._meter = ResourceMeter()
        self.workers_view = WorkersView(self.pools, self._meter)
        self.started_at = time.time()
        self._single_route: Route | None = None

    @property
    def listeners(self) -> list[Listener]:
        return self._listeners.listeners

    @property
    def stopping(self) -> bool:
        return self._shutdown.stopping

    @property
    def exit_code(self) -> int:
        return self._shutdown.exit_code

    @exit_code.setter
    def exit_code(self, code: int) -> None:
        self._shutdown.exit_code = code

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
            self._listeners.open_all(self.server.binds)
        except BindError as error:
            print(f"poolwarden: {error}", file=sys.stderr)
            return EXIT_ERROR
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(self._main(loop))
        finally:
            self._listeners.close_all()
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> int:
        self.loop = loop
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
        self.finished = self._shutdown.attach(loop, self.frontend, self.events)
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
                "bindings": self._listeners.texts,
                "pools": list(self.pools),
                "config_path": self.config_path,
            },
        )
        self._timers = [
            loop.call_later(PRUNE_EVERY, self._prune),
            loop.call_later(RSS_SAMPLE_EVERY, self._sample_rss),
            loop.call_later(CHECK_EVERY, self._check_workers),
        ]
        self._shutdown.install_signal_handlers(self.reload_config)
        for pool in list(self.pools.values()):
            pool.start()
        if not self.stopping:  # a pool that cannot spawn at all fails fast
            self.frontend.start()
        for listener in self.listeners:
            log.info("listening on %s", listener.url)
        try:
            await self.finished
        finally:
            self._shutdown.remove_signal_handlers()
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
        self._meter.sample(self.pools.values())
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

    def shutdown(self, *, kill: bool = False) -> None:
        """Stop the server: drain every pool (or kill its workers), then exit."""
        self._shutdown.begin(kill=kill)

    def _on_startup_failure(self, pool: Pool, failure: ch.StartupFailure) -> None:
        action = self.server.on_startup_failure
        if action == "serve" or pool.dispatched or self.stopping:
            return
        retries = self._startup_retries.get(pool.name)
        if retries is None:
            policy = pool.rapid_fail
            attempts = policy.max_crashes if action == "exit" and policy.enabled else 1
            retries = self._startup_retries[pool.name] = StartupRetries(max(attempts, 1))
        verdict = retries.failure(failure)
        sys.stderr.write("".join(line + "\n" for line in verdict.lines))
        sys.stderr.flush()
        if verdict.exit:
            self.exit_code = EXIT_APP_FAILED
            self.shutdown(kill=True)

    def _on_pool_stopped(self, pool: Pool) -> None:
        if pool.stop_reason is StopReason.REMOVED and self.pools.get(pool.name) is pool:
            del self.pools[pool.name]
            log.info("pool %s: removed", pool.name)
        self._shutdown.pool_stopped()

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

    async def reload_config(self) -> dict[str, Any]:
        """Apply the config file again; the running config stays if it is
        invalid (`reload.py` says in which order)."""
        if self.config_path is None or self.config is None:
            raise ValueError("this server was started without a config file (poolwarden run)")
        if self.stopping:
            raise ValueError("the server is shutting down")
        new = read_new_config(self.config_path, self.events)
        new_server = new.server_settings()
        try:
            opened = self._listeners.open_new(new_server.binds, self.frontend)
        except BindError as error:
            log.error("config reload refused: %s", error)
            raise ConfigError([], source=self.config_path) from error
        diff = apply_pool_changes(self.pools, self.config, new, self._new_pool)
        self.table = new.routing_table()
        routes = self.table.to_data()
        for pool in self.pools.values():
            pool.set_routes(routes)
        self._listeners.close_removed(new_server.binds, self.frontend)
        self.frontend.limits = new_server.head_limits
        if new_server.health_path != self.config.server.health_path:
            self.frontend.health = self._health_path(new_server.health_path)
            log.info("health path: %s", new_server.health_path or "none")
        self.config = new
        return report_reload(diff, opened, self.events)

    # the control API's view of the server (poolwarden.master.control.ControlTarget)

    def server_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "state_dir": os.path.abspath(self.server.state_dir),
            "config_path": self.config_path,
            "bindings": self._listeners.texts,
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

    # the workers (workers_view.py)

    def attach(self, pid: int) -> dict[str, Any]:
        return self.workers_view.attach(pid)

    def workers(self, pool: str | None) -> list[dict[str, Any]]:
        return self.workers_view.workers(pool)

    def reap_worker(self, pid: int) -> dict[str, Any]:
        return self.workers_view.reap_worker(pid)

    def requests(self, pool: str | None, min_elapsed: float) -> list[dict[str, Any]]:
        return self.workers_view.requests(pool, min_elapsed)

    async def worker_stack(self, pid: int) -> dict[str, Any]:
        return await self.workers_view.worker_stack(pid)

    async def pool_stack(self, name: str) -> dict[str, Any]:
        return await self.workers_view.pool_stack(name)

    def config_dict(self) -> dict[str, Any] | None:
        return self.config.to_dict() if self.config is not None else None


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
