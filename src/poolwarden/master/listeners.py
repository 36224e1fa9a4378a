"""The sockets the master listens on, from `server.binds`, over the server's life.

```
 Master.run ──open_all(binds)──▶ ListenerSet ──open_listener──▶ binding (TCP, Unix)
 FrontEnd ◀── the same list: it accepts on each listener in it
 Master.reload_config ──open_new(binds)──▶ each new one: FrontEnd.add_listener
                      ──close_removed(binds)──▶ each gone: FrontEnd.remove_listener, closed
 Shutdown ──close_all──▶ every listener closed (the front end stopped accepting first)
```

Every bind opens before anything starts, so a taken port fails the start
(or refuses the reload) before a worker exists. The front end holds the
very list this set keeps and adds to it or takes from it itself as a
reload changes the bindings; `close_all` leaves that list to it and
starts an empty one, so the bindings shown while draining are none.
"""

from __future__ import annotations

import logging

from poolwarden.master.binding import Listener, close_listener, open_listener
from poolwarden.master.frontend import FrontEnd

log = logging.getLogger("poolwarden")


class ListenerSet:
    """The master's listeners, in the order of the binds that opened them."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.listeners: list[Listener] = []

    @property
    def texts(self) -> list[str]:
        """Each listener's bind, as configured (`127.0.0.1:8000`, `unix:/run/app.sock`)."""
        return [listener.text for listener in self.listeners]

    def open_all(self, binds: list[str]) -> None:
        """Open every bind; on a BindError the ones opened are closed again."""
        opened: list[Listener] = []
        try:
            for text in binds:
                opened.append(open_listener(text, self.backlog))
        except BaseException:
            for listener in opened:
                close_listener(listener)
            raise
        self.listeners = opened

    def open_new(self, binds: list[str], frontend: FrontEnd) -> list[Listener]:
        """Open the binds not open yet and have the front end accept on them;
        on a BindError none is opened."""
        current = set(self.texts)
        opened: list[Listener] = []
        try:
            for text in binds:
                if text not in current:
                    opened.append(open_listener(text, self.backlog))
        except BaseException:
            for listener in opened:
                close_listener(listener)
            raise
        for listener in opened:
            frontend.add_listener(listener)  # appends it to self.listeners
            log.info("listening on %s", listener.url)
        return opened

    def close_removed(self, binds: list[str], frontend: FrontEnd) -> None:
        """Stop accepting on, and close, each listener whose bind is gone."""
        for listener in list(self.listeners):
            if listener.text not in binds:
                frontend.remove_listener(listener)  # takes it out of self.listeners
                close_listener(listener)
                log.info("stopped listening on %s", listener.url)

    def close_all(self) -> None:
        for listener in self.listeners:
            close_listener(listener)
        self.listeners = []
