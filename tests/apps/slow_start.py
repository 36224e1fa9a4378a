"""An app module whose import takes longer than any test's start-up time
limit (as a migration run at import, or a service it waits for, would)."""

import threading

threading.Event().wait(60)


def app(environ: object, start_response: object) -> list[bytes]:  # pragma: no cover
    return [b"never served"]
