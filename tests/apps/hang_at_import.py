"""An app whose import never finishes: it waits for a database that does
not answer, the way a start-up hangs in the field."""

import time


def connect_to_the_database() -> None:
    time.sleep(3600)


connect_to_the_database()


def app(environ, start_response):  # type: ignore[no-untyped-def]  # never reached
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"never"]
