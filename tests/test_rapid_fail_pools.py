"""Rapid-fail protection with real processes: a crash loop disables its pool."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from poolwarden.control_client import ControlClient
from poolwarden.events import catalog
from poolwarden.events.store import EventStore
from tests.conftest import events_of, one_pool_config, wait_until

CONFIG = one_pool_config(
    "loop",
    "tests.apps.crash_loop:app",
    'start_mode = "always_running"\nenv = {{ CRASH_LOOP_FIXED = "@MARKER@" }}',
)


def test_a_crash_loop_disables_the_pool_and_pool_start_recovers_it(
    start_serve: Any, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    server = start_serve(CONFIG.replace("@MARKER@", str(fixed)))
    control = ControlClient(str(server.state_dir))
    wait_until(
        lambda: control.get("/v1/pools/loop")["state"] == "disabled",
        timeout=60,
        what="rapid-fail protection to disable the pool",
    )
    with EventStore.open_reader(server.state_dir) as store:
        failures = store.query(pool="loop", event_id=catalog.WORKER_STARTUP_FAILED)
        [disabled] = store.query(pool="loop", event_id=catalog.POOL_DISABLED_RAPID_FAIL)
    assert len(failures) == 5
    assert [f.message.rsplit("; ", 1)[-1] for f in failures] == [
        f"failure {n} of 5 within 5m" for n in range(1, 6)
    ]
    assert disabled.details["failures"] == 5
    assert disabled.details["last_failure_seq"] == failures[-1].seq
    last = disabled.details["last_failure_details"]["startup_failure"]
    assert last["module"] == "tests.apps.crash_loop"
    assert "the database is not reachable" in last["message"]
    assert "Traceback" in last["traceback"]
    # answered by the front end at once, with the reason and the event
    asked = time.monotonic()
    status, headers, body = server.get("/")
    assert time.monotonic() - asked < 1.0
    assert (status, headers["x-poolwarden-reason"]) == (503, "pool_disabled")
    assert headers["x-poolwarden-event"] == str(disabled.seq)
    assert b"rapid-fail protection" in body
    assert server.worker_pids() == []
    health = control.request("GET", "/v1/health")
    assert health.status == 503 and health.body["pools"]["loop"] == "disabled"
    # fixed, then started again by an administrator
    fixed.touch()
    control.post("/v1/pools/loop/start")
    server.wait_for_workers(1)
    assert server.get("/")[0::2] == (200, b"fixed")


def test_requests_to_an_on_demand_pool_that_cannot_start_lead_to_its_disable(
    start_serve: Any, tmp_path: Path
) -> None:
    server = start_serve(
        one_pool_config(
            "loop",
            "tests.apps.crash_loop:app",
            f'start_mode = "on_demand"\nenv = {{{{ CRASH_LOOP_FIXED = "{tmp_path / "never"}" }}}}',
        )
    )
    control = ControlClient(str(server.state_dir))
    answers: list[tuple[int, str, float]] = []

    def disabled() -> bool:
        asked = time.monotonic()
        status, headers, _ = server.get("/", timeout=60)
        answers.append((status, headers["x-poolwarden-reason"], time.monotonic() - asked))
        return headers["x-poolwarden-reason"] == "pool_disabled"

    wait_until(disabled, timeout=60, what="requests alone to drive the pool to disabled")
    with EventStore.open_reader(server.state_dir) as store:
        failures = store.query(pool="loop", event_id=catalog.WORKER_STARTUP_FAILED)
        [event] = store.query(pool="loop", event_id=catalog.POOL_DISABLED_RAPID_FAIL)
    assert len(failures) == 5
    assert event.details["failures"] == 5
    shown = control.get("/v1/pools/loop")
    assert (shown["state"], shown["last_event"]) == ("disabled", f"5002 #{event.seq}")
    # Each request waited for one attempt at most (the back-off, then the
    # import) and got that attempt's 503, or the disable's.
    assert {(status, reason) for status, reason, _ in answers} <= {
        (503, "startup_failed"),
        (503, "pool_disabled"),
    }
    assert max(seconds for _, _, seconds in answers) < 15
    assert answers[-1][:2] == (503, "pool_disabled")


def test_tcp_level_resets_and_auto_restart_after_starts_the_pool_again(
    start_serve: Any, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    config = CONFIG.replace("@MARKER@", str(fixed)) + (
        '\n[pools.loop.rapid_fail]\nmax_crashes = 2\nload_balancer_capability = "tcp_level"\n'
        'auto_restart_after = "2s"\n'
    )
    server = start_serve(config)
    control = ControlClient(str(server.state_dir))
    wait_until(lambda: control.get("/v1/pools/loop")["state"] == "disabled", what="disabled")
    # tcp_level: no HTTP answer at all, the connection is reset
    sock = server.connect(5.0)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
    finally:
        sock.close()
    assert data == b""
    # fixed meanwhile: auto_restart_after starts it again by itself
    fixed.touch()
    wait_until(lambda: control.get("/v1/pools/loop")["state"] == "started", what="restarted")
    server.wait_for_workers(1)
    assert server.get("/")[0::2] == (200, b"fixed")


MEMORY = one_pool_config(
    "big",
    "tests.apps.recycle_apps:app",
    'start_mode = "always_running"\n\n[pools.big.recycling]\nmemory_hard_limit = "100MiB"',
)


def test_the_memory_hard_limit_kills_at_once_with_its_event(start_serve: Any) -> None:
    server = start_serve(MEMORY)
    [pid] = server.wait_for_workers(1)
    for _ in range(3):
        assert server.get("/grow")[0] == 200
    event = wait_until(
        lambda: events_of(server, catalog.WORKER_MEMORY_HARD_LIMIT), what="the hard limit event"
    )
    assert isinstance(event, list) and event[0].pid == pid
    assert event[0].details["last_rss"] > 100 * 1024 * 1024
    server.wait_for_workers(1, exclude={pid})


def test_the_auto_shutdown_command_runs_with_the_pool_and_event_and_its_output_is_kept(
    start_serve: Any, tmp_path: Path
) -> None:
    script = tmp_path / "page-oncall.sh"
    marker = tmp_path / "paged"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$POOLWARDEN_POOL $POOLWARDEN_EVENT_SEQ $1" > "{marker}"\n'
        'echo "paged the on-call for $POOLWARDEN_POOL"\n'
    )
    script.chmod(0o755)
    config = CONFIG.replace("@MARKER@", str(tmp_path / "never")) + (
        f'\n[pools.loop.rapid_fail]\nmax_crashes = 2\nauto_shutdown_command = ["{script}", "web"]\n'
    )
    server = start_serve(config)
    ran = wait_until(
        lambda: events_of(server, catalog.AUTO_SHUTDOWN_COMMAND_RAN), timeout=60, what="the command"
    )
    [disabled] = events_of(server, catalog.POOL_DISABLED_RAPID_FAIL)
    assert isinstance(ran, list)
    assert marker.read_text().split() == ["loop", str(disabled.seq), "web"]
    assert ran[0].details["output"] == "paged the on-call for loop\n"
    assert ran[0].details["returncode"] == 0


def test_an_auto_shutdown_command_past_its_time_limit_is_killed_and_recorded(
    start_serve: Any, tmp_path: Path
) -> None:
    hanging = tmp_path / "hang.sh"
    hanging.write_text("#!/bin/sh\necho starting\nexec sleep 60\n")
    hanging.chmod(0o755)
    config = CONFIG.replace("@MARKER@", str(tmp_path / "never")) + (
        f'\n[pools.loop.rapid_fail]\nmax_crashes = 2\nauto_shutdown_command = ["{hanging}"]\n'
        'auto_shutdown_time_limit = "500ms"\n'
    )
    server = start_serve(config)
    failed = wait_until(
        lambda: events_of(server, catalog.AUTO_SHUTDOWN_COMMAND_FAILED), timeout=60, what="failed"
    )
    assert isinstance(failed, list)
    assert failed[0].details["timed_out"] is True
    assert failed[0].details["output"] == "starting\n"
    assert "killed at its time limit" in failed[0].message
