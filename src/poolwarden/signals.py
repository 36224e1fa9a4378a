"""The signals poolwarden sends its workers, in one place for both sides.

Real-time signals, so that none collides with what an app or a library
installs for itself (gunicorn's apps may use SIGUSR1, uWSGI's SIGUSR2).
"""

from __future__ import annotations

import signal
import threading

STACK_SIGNAL = signal.SIGRTMIN + 4
"""faulthandler dumps every thread's stack to the worker's stack pipe."""

ATTACH_SIGNAL = signal.SIGRTMIN + 5
"""The worker opens a pdb server and stops its main thread (`debug attach`)."""


def interruptible() -> None:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt in this process.

    A shell starts background jobs with SIGINT ignored, and Python then
    leaves it ignored: a command started from a script would not end on
    `kill -INT` nor let its user interrupt it. The commands whose contract is
    "Ctrl-C ends it" say so themselves (only the main thread may).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
