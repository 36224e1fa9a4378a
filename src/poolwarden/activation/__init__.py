"""The activation service's policy: pure functions of (state, event, now).

The drivers (`poolwarden.master.pool` and its parts for `pool_policy` with
its `worker_roster`, `rapid_fail` and `recycling`;
`poolwarden.master.worker_process` for `worker_health`) perform what they
decide; these modules read no clock, spawn nothing, signal nothing and log
nothing.
"""
