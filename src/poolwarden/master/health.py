"""Is the server ready for traffic? One judgement, two ways to ask it.

```
 control API  GET /v1/health ──┐
                               ├─▶ Master.readiness() ─▶ judge(facts of each pool, draining)
 any binding  GET health_path ─┘        (this module: no sockets, no clock)
```

A load balancer or an orchestrator asks "should I send this host traffic?".
The answer is **not ready** while the server drains or while any pool
cannot serve for a reason that will not pass by itself: rapid-fail
protection disabled it, or its app fails to start. A pool an administrator
stopped on purpose does not make the server unready (every host of a
fleet would fail its probe at once, and the other pools would go down with
it); neither does a pool that has no worker yet (workers start on demand).

The control API shows every pool's state; a binding, which anyone who can
reach it may ask, shows only the pools that are not ready, each with the
reason code its own requests get (`X-Poolwarden-Reason`) and the event that
explains it (`X-Poolwarden-Event`): nothing a client of that pool is not
already told.

A `tcp_level` pool that rapid-fail protection disabled resets its
connections instead of answering 503, for balancers that do not read HTTP.
The health path is asked by probes that do read HTTP, so it answers: `503`,
with the pool shown `disabled` and the reason `pool_disabled_reset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from poolwarden.http.responses import simple_response
from poolwarden.master.pool import Pool, PoolState

Status = Literal["ok", "degraded", "draining"]

ALLOWED = "GET, HEAD"
"""The methods the health path answers; others get 405 with this `Allow`."""


@dataclass(frozen=True, slots=True)
class PoolFacts:
    """What the judgement needs to know of one pool."""

    state: PoolState
    shown: str
    """The state as `poolwarden pools` shows it (`starting` before a worker is Ready)."""
    reason: str
    """The reason code its requests are refused with now ("" while it serves)."""
    event: int | None = None
    """The event that explains the refusal, when there is one."""


@dataclass(frozen=True, slots=True)
class NotReady:
    """A pool that makes the server not ready."""

    state: str
    reason: str
    event: int | None

    def to_dict(self) -> dict[str, object]:
        return {"state": self.state, "reason": self.reason, "event": self.event}


@dataclass(frozen=True, slots=True)
class Readiness:
    status: Status
    pools: dict[str, str]
    """Every pool's state by name, as `poolwarden pools` shows it."""
    not_ready: dict[str, NotReady]

    @property
    def http_status(self) -> int:
        return 200 if self.status == "ok" else 503

    def control_body(self) -> dict[str, object]:
        """`GET /v1/health` (docs/openapi.json, schema `Health`)."""
        return {
            "status": self.status,
            "pools": dict(self.pools),
            "not_ready": {name: each.to_dict() for name, each in self.not_ready.items()},
        }

    def binding_body(self) -> dict[str, object]:
        """The health path's answer: the status and the pools that are not ready."""
        return {
            "status": self.status,
            "not_ready": {name: each.to_dict() for name, each in self.not_ready.items()},
        }


UNREADY_STATES = (PoolState.DISABLED, PoolState.STARTUP_FAILED)
"""Pool states that make the server not ready."""


def judge(pools: Mapping[str, PoolFacts], *, draining: bool) -> Readiness:
    """The server's readiness from its pools' facts; pure."""
    not_ready = {
        name: NotReady(facts.state.value, facts.reason, facts.event)
        for name, facts in pools.items()
        if facts.state in UNREADY_STATES
    }
    status: Status = "draining" if draining else "degraded" if not_ready else "ok"
    return Readiness(status, {name: facts.shown for name, facts in pools.items()}, not_ready)


def facts_of(pool: Pool) -> PoolFacts:
    """Read a pool's facts, with the reason code its requests get now
    (the one `Pool.dispatch` refuses them with)."""
    shown = str(pool.status()["state"])
    if pool.state is PoolState.DISABLED:
        tcp = pool.settings.load_balancer_capability == "tcp_level"
        reason = "pool_disabled_reset" if tcp else "pool_disabled"
        return PoolFacts(pool.state, shown, reason, pool.disabled_seq)
    if pool.state is PoolState.STARTUP_FAILED:
        failure = pool.last_failure
        timed_out = failure is not None and failure.phase == "startup_timeout"
        reason = "startup_timeout" if timed_out else "startup_failed"
        return PoolFacts(pool.state, shown, reason, pool.last_failure_seq)
    return PoolFacts(pool.state, shown, "")


# --- the health path's answer on a binding ------------------------------------------


def health_answer(method: str, path: str, readiness: Readiness) -> tuple[int, str, bytes]:
    """(status, reason code, response bytes) for `method` on the health path.

    `GET` and `HEAD` get 200 or 503 with `binding_body()` as JSON (HEAD
    without the body); anything else gets 405 with `Allow: GET, HEAD`. The
    reason code (`ready`, `not_ready`, `method_not_allowed`) goes in
    `X-Poolwarden-Reason` and the front-end log, so an answer of the health
    path is never mistaken for one of an app. `Cache-Control: no-store`: a
    cache in between must not answer a probe with an old state.
    """
    if method in ("GET", "HEAD"):
        status = readiness.http_status
        reason = "ready" if status == 200 else "not_ready"
        body = readiness.binding_body()
        extra: tuple[tuple[str, str], ...] = (("cache-control", "no-store"),)
    else:
        status, reason = 405, "method_not_allowed"
        body = {
            "error": {
                "code": reason,
                "message": f"{method} is not allowed on {path} (allowed: {ALLOWED})",
            }
        }
        extra = (("allow", ALLOWED), ("cache-control", "no-store"))
    payload = msgspec.json.encode(body).decode("utf-8") + "\n"
    response = simple_response(
        status,
        payload,
        reason_code=reason,
        extra_headers=extra,
        head_only=method == "HEAD",
        content_type="application/json",
    )
    return status, reason, response
