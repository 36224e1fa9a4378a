"""The health policy (`activation.worker_health`) as real workers meet it:
the start-up time limit ends a worker too slow to load its app."""

from __future__ import annotations

from typing import Any

from poolwarden.events import catalog
from tests.conftest import events_of, one_pool_config, wait_until


def test_a_worker_not_ready_within_the_start_up_time_limit_is_killed_and_explained(
    start_serve: Any,
) -> None:
    server = start_serve(
        one_pool_config(
            "slow",
            "tests.apps.hang_at_import:app",
            'start_mode = "on_demand"\n'
            "[pools.slow.process_model]\n"
            'startup_time_limit = "1s"\nping_interval = "100ms"\nping_response_time = "200ms"\n',
        )
    )
    # The request starts the worker and waits for it; it never becomes Ready.
    status, headers, body = server.get("/", timeout=30)
    assert status == 503, body
    assert headers["x-poolwarden-reason"] == "startup_timeout"
    server.wait_for_stderr(r"worker \d+ was not ready within the start-up time limit \(1s\)")
    [event] = wait_until(  # type: ignore[misc]
        lambda: events_of(server, catalog.WORKER_STARTUP_TIME_LIMIT), what="event 5012"
    )
    assert event.details["ended_by"] == "startup_time_limit"
    # A worker not yet Ready is not judged by pings.
    assert events_of(server, catalog.WORKER_PING_FAILED) == []
