"""Describing how a worker process ended, from its wait status."""

from __future__ import annotations

import signal


def describe_exit(returncode: int) -> str:
    """`exited with status 3` or `killed by SIGSEGV (signal 11)`."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name} (signal {number})"
    return f"exited with status {returncode}"
