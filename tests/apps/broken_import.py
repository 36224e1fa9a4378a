"""An app module that fails while it is imported, at a known line."""

import os

SETTINGS = {"database": os.environ.get("BROKEN_IMPORT_DATABASE", "")}


def check_settings(settings: dict[str, str]) -> None:
    if not settings["database"]:
        raise KeyError("DATABASE_URL is not set")


check_settings(SETTINGS)


def app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [])
    return [b"never served\n"]
