"""The activation service's policy: pure functions of (state, event, now).

The drivers (`poolwarden.master.pool` for `pool_policy`, `rapid_fail` and
`recycling`; `poolwarden.master.worker_process` for `worker_health`) perform
what they decide; these modules read no clock, spawn nothing, signal nothing
and log nothing.
"""
