"""The master's signals, and the order in which a server stops.

```
 SIGHUP ──────────▶ Shutdown.on_signal ──▶ reload (Master.reload_config), in a task
 a second SIGINT ─▶ Shutdown.on_signal ──▶ every Pool.kill, exit status 1
 SIGTERM, SIGINT ─▶ Shutdown.on_signal ──▶ begin(): event 2001 (stopping)
                                             ├─▶ FrontEnd: stop accepting, answer half-read heads
                                             ├─▶ ListenerSet.close_all
                                             └─▶ every Pool.drain(shutdown_time_limit), or kill
 each Pool's on_stopped ──▶ pool_stopped ──▶ `finished` once every pool is STOPPED
```

Signal handlers only record what was asked and schedule it; the loop does
the work. Stopping lets every worker finish what it serves, up to its
pool's shut-down time limit; a start-up failure in `run` mode (fail fast)
or a second interrupt kills the workers instead.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from poolwarden.config import ConfigError
from poolwarden.events import catalog
from poolwarden.master.event_log import EventLog
from poolwarden.master.frontend import FrontEnd
from poolwarden.master.listeners import ListenerSet
from poolwarden.master.pool import Pool, PoolState, StopReason

log = logging.getLogger("poolwarden")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_APP_FAILED = 3
"""`poolwarden run` exits with this when the app cannot start (fail fast)."""

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Shutdown:
    """Whether the server is stopping, how it stops, and with which exit status."""

    def __init__(self, pools: dict[str, Pool], listeners: ListenerSet) -> None:
        self.pools = pools
        """The master's own dict: pools added or removed by a reload are seen."""
        self.listeners = listeners
        self.stopping = False
        self.exit_code = EXIT_OK
        self._interrupts = 0

    def attach(
        self, loop: asyncio.AbstractEventLoop, frontend: FrontEnd, events: EventLog
    ) -> asyncio.Future[None]:
        """The running server's pieces; the future is done once it has stopped."""
        self.loop = loop
        self.frontend = frontend
        self.events = events
        self.finished: asyncio.Future[None] = loop.create_future()
        return self.finished

    def install_signal_handlers(self, reload: Callable[[], Awaitable[Any]]) -> None:
        self._reload = reload
        for signum in SIGNALS:
            self.loop.add_signal_handler(signum, self.on_signal, signum)

    def remove_signal_handlers(self) -> None:
        for signum in SIGNALS:
            self.loop.remove_signal_handler(signum)

    def on_signal(self, signum: int) -> None:
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
        self.begin()
        # Said once the listeners are closed, so whoever reads it may rely on that.
        log.info("received %s: finishing the requests in flight", signal.Signals(signum).name)

    async def _reload_from_signal(self) -> None:
        try:
            await self._reload()
        except ConfigError:
            pass  # logged by reload_config
        except ValueError as error:
            log.warning("SIGHUP ignored: %s", error)

    def begin(self, *, kill: bool = False) -> None:
        """Stop accepting, answer the heads half read, and drain (or kill)
        every pool; `finished` follows when the last pool has stopped. Asked
        again while stopping, only `kill` does anything."""
        if self.stopping:
            if kill:
                for pool in self.pools.values():
                    pool.kill()
            return
        self.stopping = True
        self.events.emit(catalog.SERVER_STOPPING, "the server is stopping")
        self.frontend.stop_accepting()
        self.frontend.abandon_pending()
        self.listeners.close_all()
        for pool in list(self.pools.values()):
            if kill:
                pool.kill()
            else:
                pool.drain(pool.settings.shutdown_time_limit, StopReason.SHUTDOWN)
        self.pool_stopped()

    def pool_stopped(self) -> None:
        """A pool stopped (or may have): the server is finished once stopping
        and every pool is STOPPED."""
        if (
            self.stopping
            and all(pool.state is PoolState.STOPPED for pool in self.pools.values())
            and not self.finished.done()
        ):
            self.finished.set_result(None)
