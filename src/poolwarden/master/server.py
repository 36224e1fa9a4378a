"""The master: one event loop running the front end and the pools.

It opens the listeners first (a taken port fails before anything starts),
starts the pools, and then only reacts: to connections, to worker messages
and exits, and to signals. Signal handlers only record what was asked; the
loop does the work.

Shutdown: SIGTERM or SIGINT stops accepting, answers half-read heads, lets
every worker finish what it is serving (up to the pool's shut-down time
limit), then exits 0. A second SIGINT kills the workers and exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from poolwarden import channel as ch
from poolwarden.http.head import RequestHead
from poolwarden.master.binding import BindError, Listener, close_listener, open_listener
from poolwarden.master.frontend import FrontEnd, Route
from poolwarden.master.pool import Pool
from poolwarden.settings import PoolSettings, ServerSettings

log = logging.getLogger("poolwarden")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_APP_FAILED = 3
"""`poolwarden run` exits with this when the app cannot start (fail fast)."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Master:
    """Runs one server: listeners, a front end, and its pools."""

    def __init__(self, server: ServerSettings, pools: list[PoolSettings]) -> None:
        self.server = server
        self.pool_settings = pools
        self.pools: list[Pool] = []
        self.listeners: list[Listener] = []
        self.exit_code = EXIT_OK
        self.stopping = False
        self._interrupts = 0

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
        for settings in self.pool_settings:
            self.pools.append(
                Pool(
                    loop,
                    settings,
                    self.server,
                    access_log_fd=self.access_log_fd,
                    on_startup_failure=self._on_startup_failure,
                    on_stopped=self._on_pool_stopped,
                )
            )
        self.frontend = FrontEnd(loop, self.listeners, self.server.head_limits, self._route)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        for pool in self.pools:
            pool.start()
        if not self.stopping:  # a pool that cannot spawn at all fails fast
            self.frontend.start()
        for listener in self.listeners:
            log.info("listening on %s", listener.url)
        try:
            await self.finished
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            os.close(self.access_log_fd)
        return self.exit_code

    def _route(self, listener: Listener, head: RequestHead) -> Route | None:
        pool = self.pools[0]
        return Route(pool.dispatch, "")

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                log.warning("second interrupt: stopping at once")
                self.exit_code = EXIT_ERROR
                for pool in self.pools:
                    pool.kill()
                return
        log.info("received %s: finishing the requests in flight", signal.Signals(signum).name)
        self.shutdown()

    def shutdown(self, *, kill: bool = False) -> None:
        if self.stopping:
            if kill:
                for pool in self.pools:
                    pool.kill()
            return
        self.stopping = True
        self.frontend.stop_accepting()
        self.frontend.abandon_pending()
        for listener in self.listeners:
            close_listener(listener)
        self.listeners = []
        for pool in self.pools:
            if kill:
                pool.kill()
            else:
                pool.drain(pool.settings.shutdown_time_limit)

    def _on_startup_failure(self, pool: Pool, failure: ch.StartupFailure) -> None:
        if self.server.on_startup_failure == "exit" and pool.dispatched == 0 and not self.stopping:
            sys.stderr.write(f"poolwarden: {failure.headline()}\n")
            if failure.traceback:
                sys.stderr.write(failure.traceback)
            sys.stderr.flush()
            self.exit_code = EXIT_APP_FAILED
            self.shutdown(kill=True)

    def _on_pool_stopped(self, pool: Pool) -> None:
        if all(p.state.value == "stopped" for p in self.pools) and not self.finished.done():
            self.finished.set_result(None)
