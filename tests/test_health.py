"""The readiness judgement and the health path's answers, without processes."""

from __future__ import annotations

import json
from itertools import product

import pytest

from poolwarden.master.health import PoolFacts, Readiness, health_answer, judge
from poolwarden.master.pool import PoolState

UNREADY = {PoolState.DISABLED, PoolState.STARTUP_FAILED}


def facts(state: PoolState) -> PoolFacts:
    reason = {PoolState.DISABLED: "pool_disabled", PoolState.STARTUP_FAILED: "startup_failed"}
    return PoolFacts(state, state.value, reason.get(state, ""), 3 if state in UNREADY else None)


@pytest.mark.parametrize(
    ("first", "second", "draining"), list(product(PoolState, PoolState, [False, True]))
)
def test_every_pair_of_pool_states(first: PoolState, second: PoolState, draining: bool) -> None:
    readiness = judge({"a": facts(first), "b": facts(second)}, draining=draining)
    unready = [name for name, state in (("a", first), ("b", second)) if state in UNREADY]
    assert list(readiness.not_ready) == unready
    if draining:
        assert readiness.status == "draining"
    else:
        assert readiness.status == ("degraded" if unready else "ok")
    assert readiness.http_status == (200 if readiness.status == "ok" else 503)
    assert readiness.pools == {"a": first.value, "b": second.value}


def test_the_binding_shows_only_the_pools_not_ready() -> None:
    readiness = judge(
        {
            "web": PoolFacts(PoolState.STARTED, "starting", ""),
            "api": PoolFacts(PoolState.DISABLED, "disabled", "pool_disabled_reset", 12),
            "admin": PoolFacts(PoolState.STOPPED, "stopped", "pool_stopped"),
        },
        draining=False,
    )
    not_ready = {"api": {"state": "disabled", "reason": "pool_disabled_reset", "event": 12}}
    assert readiness.binding_body() == {"status": "degraded", "not_ready": not_ready}
    assert readiness.control_body() == {
        "status": "degraded",
        "pools": {"web": "starting", "api": "disabled", "admin": "stopped"},
        "not_ready": not_ready,
    }


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


READY = Readiness("ok", {"web": "started"}, {})


def test_get_and_head_answer_the_same_head() -> None:
    status, reason, get = health_answer("GET", "/healthz", READY)
    assert (status, reason) == (200, "ready")
    line, headers, body = split(get)
    assert line == "HTTP/1.1 200 OK"
    assert json.loads(body) == {"status": "ok", "not_ready": {}}
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert headers["content-length"] == str(len(body))
    assert headers["x-poolwarden-reason"] == "ready"
    head_line, head_headers, head_body = split(health_answer("HEAD", "/healthz", READY)[2])
    assert (head_line, head_body) == (line, b"")
    assert {k: v for k, v in head_headers.items() if k != "date"} == {
        k: v for k, v in headers.items() if k != "date"
    }


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "get"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    status, reason, response = health_answer(method, "/healthz", READY)
    assert (status, reason) == (405, "method_not_allowed")
    line, headers, body = split(response)
    assert line == "HTTP/1.1 405 Method Not Allowed"
    assert headers["allow"] == "GET, HEAD"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == {
        "code": "method_not_allowed",
        "message": f"{method} is not allowed on /healthz (allowed: GET, HEAD)",
    }
