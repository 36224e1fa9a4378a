"""`python -m poolwarden.worker CHANNEL_FD SCOREBOARD_FD ACCESS_LOG_FD MASTER_PID CRASH_FD STACK_FD`.

MASTER_PID is 0 when the worker runs under a launch wrapper (see
`bootstrap.die_with_parent`)."""

import sys

from poolwarden.worker.bootstrap import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
