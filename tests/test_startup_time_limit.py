"""A start-up past `startup_time_limit`: killed, counted, and its event shows
where the import was stuck (real processes)."""

from __future__ import annotations

from typing import Any

import pytest

from poolwarden.events import catalog
from tests.conftest import events_of, one_pool_config, wait_until


def test_a_start_up_past_its_limit_is_killed_with_the_line_it_hung_on(start_serve: Any) -> None:
    server = start_serve(
        one_pool_config(
            "stuck",
            "tests.apps.hang_at_import:app",
            'start_mode = "always_running"\n'
            '[pools.stuck.process_model]\nstartup_time_limit = "1s"\n',
        )
    )
    [event] = wait_until(  # type: ignore[misc]
        lambda: events_of(server, catalog.WORKER_STARTUP_TIME_LIMIT)[:1],
        timeout=30,
        what="event 5012",
    )
    assert "failure 1 of 5" in event.message
    crash = event.details["crash"]
    assert crash["frame"]["name"] == "connect_to_the_database"
    assert crash["frame"]["filename"].endswith("tests/apps/hang_at_import.py")
    assert "in connect_to_the_database" in crash["dump"]
    assert event.fingerprint.startswith("startup_time_limit ")
    assert "SIGABRT" in event.message


def test_run_takes_its_time_limits_as_the_config_writes_them(start_server: Any) -> None:
    server = start_server(
        "tests.apps.hang_at_import:app",
        "--startup-time-limit",
        "1s500ms",
        "--on-startup-failure",
        "serve",
        wait_ready=False,
    )
    [event] = wait_until(  # type: ignore[misc]
        lambda: events_of(server, catalog.WORKER_STARTUP_TIME_LIMIT)[:1],
        timeout=30,
        what="event 5012",
    )
    assert 1.5 <= event.details["uptime"] < 10
    assert event.details["crash"]["frame"]["name"] == "connect_to_the_database"


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("--startup-time-limit", "soon", 'invalid duration "soon"'),
        ("--ping-response-time", "0", "'0' is less than 10ms"),
        ("--request-timeout", "-5s", "invalid duration"),
    ],
)
def test_a_bad_duration_is_refused_with_its_option(
    start_server: Any, option: str, value: str, complaint: str
) -> None:
    server = start_server("tests.apps.wsgi_apps:app", option, value, wait_ready=False)
    assert server.process.wait(timeout=30) == 2
    stderr = server.stderr()
    assert f"Invalid value for '{option}'" in stderr
    assert complaint in stderr
