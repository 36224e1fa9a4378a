"""The signals poolwarden sends its workers, in one place for both sides.

Real-time signals, so that none collides with what an app or a library
installs for itself (gunicorn's apps may use SIGUSR1, uWSGI's SIGUSR2).
"""

from __future__ import annotations

import signal

STACK_SIGNAL = signal.SIGRTMIN + 4
"""faulthandler dumps every thread's stack to the worker's stack pipe."""

ATTACH_SIGNAL = signal.SIGRTMIN + 5
"""The worker opens a pdb server and stops its main thread (`debug attach`)."""
