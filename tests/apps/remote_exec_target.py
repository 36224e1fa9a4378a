"""A worker's main thread receiving `sys.remote_exec` requests, for tests on
interpreters without it (3.11 to 3.13): only the transport is stood in for.

`python -m tests.apps.remote_exec_target STACK_FD`. As in a worker,
faulthandler answers STACK_SIGNAL on STACK_FD and `bootstrap.stack_fd`
names it. Each line on stdin is a command, answered with "ok" once done:

    run PATH    run the script at PATH now, as CPython runs a remote_exec
                script: read the file, then run its text as "<string>" in a
                fresh namespace, on the main thread, inside the frame it
                interrupted (here: `serve`)
    hold PATH   keep it unrun, as a main thread that does not get to it
    release     run the held ones
"""

from __future__ import annotations

import faulthandler
import sys

import poolwarden.worker.bootstrap as bootstrap
from poolwarden.signals import STACK_SIGNAL


def run_script(path: str) -> None:
    """As CPython's `run_remote_debugger_script`: read it whole, then run it."""
    with open(path, "rb") as file:
        source = file.read()
    exec(compile(source, "<string>", "exec"), {})


def serve(fd: int) -> None:
    faulthandler.register(STACK_SIGNAL, file=fd, all_threads=True, chain=False)
    bootstrap.stack_fd = fd
    held: list[str] = []
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, path = line.strip().partition(" ")
        if command == "run":
            run_script(path)
        elif command == "hold":
            held.append(path)
        elif command == "release":
            for each in held:
                run_script(each)
            held.clear()
        print("ok", flush=True)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
