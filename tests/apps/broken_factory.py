"""A factory that fails when poolwarden calls it (`--factory`)."""

from typing import Any


def create_app() -> Any:
    config = load_config()
    return config


def load_config() -> Any:
    raise ValueError("config file app.toml has no [server] table")


def create_app_returning_none() -> Any:
    return None
