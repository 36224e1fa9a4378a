"""Orphan mode (`rapid_fail.orphan_worker`): a hung worker is kept stopped,
listed, handed to the orphan action, and reaped (real processes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psutil

from poolwarden.events import catalog
from tests.conftest import POOLWARDEN, Server, events_of, one_pool_config, wait_until


def _config(tmp_path: Path, action: str) -> str:
    return one_pool_config(
        "hang",
        "tests.apps.crash_apps:hanging",
        f"""start_mode = "always_running"
threads = 1
[pools.hang.process_model]
ping_interval = "200ms"
ping_response_time = "1s"
[pools.hang.rapid_fail]
orphan_worker = true
orphan_action_command = {action}
""",
    )


def _cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POOLWARDEN, *args, "--state-dir", str(server.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _workers(server: Server) -> list[dict[str, Any]]:
    result = _cli(server, "wp", "--json")
    assert result.returncode == 0, result.stderr
    workers: list[dict[str, Any]] = json.loads(result.stdout)["workers"]
    return workers


def test_a_hung_worker_is_kept_stopped_listed_and_reaped(start_serve: Any, tmp_path: Path) -> None:
    marker = tmp_path / "action"
    action = tmp_path / "collect.sh"
    action.write_text(f'#!/bin/sh\necho "$POOLWARDEN_PID $POOLWARDEN_POOL" > "{marker}"\n')
    action.chmod(0o755)
    server = start_serve(_config(tmp_path, f'["{action}"]'))
    [pid] = server.wait_for_workers(1)
    status, headers, _ = server.get("/hang")
    # The request in flight is answered for the orphan, naming its event.
    assert status == 502
    [event] = events_of(server, catalog.WORKER_ORPHANED)
    assert headers["x-poolwarden-event"] == str(event.seq)
    assert event.pid == pid
    assert "stuck_here" in event.details["stacks"]
    assert "failure 1 of 5" in event.message
    # Stopped, not killed; listed as orphaned; replaced by a serving worker.
    assert wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    rows = {row["pid"]: row for row in _workers(server)}
    assert rows[pid]["state"] == "orphaned"
    wait_until(lambda: any(r["state"] == "ready" for r in _workers(server)), what="a replacement")
    assert server.get("/")[0] == 200
    # The orphan action ran with its pid.
    wait_until(marker.exists, what="the orphan action")
    assert marker.read_text().split() == [str(pid), "hang"]
    assert events_of(server, catalog.ORPHAN_ACTION_FAILED) == []
    # A serving worker is not an orphan; the orphan is reaped on request.
    serving = next(r["pid"] for r in _workers(server) if r["state"] == "ready")
    refused = _cli(server, "wp", "reap", str(serving))
    assert refused.returncode != 0 and "not an orphan" in refused.stderr
    reaped = _cli(server, "wp", "reap", str(pid))
    assert reaped.returncode == 0, reaped.stderr
    wait_until(lambda: not psutil.pid_exists(pid) or _zombie(pid), what="the orphan to end")
    wait_until(lambda: pid not in {r["pid"] for r in _workers(server)}, what="unlisted")
    ended = [e for e in events_of(server, catalog.WORKER_EXITED) if e.pid == pid]
    assert ended and "orphan" in ended[0].message


def test_a_failing_orphan_action_is_recorded(start_serve: Any, tmp_path: Path) -> None:
    server = start_serve(_config(tmp_path, '["/nonexistent/collect-core"]'))
    [pid] = server.wait_for_workers(1)
    assert server.get("/hang")[0] == 502
    failed = wait_until(lambda: events_of(server, catalog.ORPHAN_ACTION_FAILED), what="5015")
    assert isinstance(failed, list) and failed[0].pid == pid
    assert "could not be started" in failed[0].message
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
