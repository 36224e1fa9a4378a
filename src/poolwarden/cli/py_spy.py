"""Native (C) stacks of workers, read by `py-spy dump --native` (`stack --native`).

    stack_command ──▶ add_native_stacks(workers) ──▶ py-spy dump --native --pid PID
                                                     (one per worker, in parallel)
        each worker's answer gains "native": {"command", "ok", "output", "error", "hint"}

py-spy runs here, in the command's process, not in the server: it needs
ptrace permission on the worker, which the person at the terminal may have
and the server should not. A failure is described, never raised, so one
unreadable worker does not hide the others' stacks.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PY_SPY_TIMEOUT = 10.0
"""Seconds `py-spy dump` gets per worker: it pauses the process for well under
a second; a worker it cannot read in 10 s will not be read in 60."""
PY_SPY_INSTALL = "pip install py-spy"
PTRACE_HINT = (
    "py-spy reads the worker's memory with ptrace: run this command as root, or as the "
    "workers' user with kernel.yama.ptrace_scope = 0 (sysctl -w kernel.yama.ptrace_scope=0); "
    "in a container, grant the SYS_PTRACE capability"
)


def native_stack(py_spy: str | None, pid: int) -> dict[str, Any]:
    """`py-spy dump --native --pid PID` of one worker: {"command", "ok",
    "output", "error", "hint"}; `command` is None when py-spy is not installed."""
    if py_spy is None:
        return {
            "command": None,
            "ok": False,
            "output": "",
            "error": "py-spy is not installed (not on PATH)",
            "hint": f"install it with: {PY_SPY_INSTALL}",
        }
    command = [py_spy, "dump", "--native", "--pid", str(pid)]
    shown = f"py-spy dump --native --pid {pid}"
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PY_SPY_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        error, hint = f"no answer within {PY_SPY_TIMEOUT:g}s", None
    except OSError as failure:
        error, hint = f"cannot run {py_spy}: {failure.strerror or failure}", None
    else:
        if done.returncode == 0:
            return {
                "command": shown,
                "ok": True,
                "output": done.stdout,
                "error": None,
                "hint": None,
            }
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        error = " ".join(line.strip() for line in said) or f"exit status {done.returncode}"
        hint = PTRACE_HINT
    return {"command": shown, "ok": False, "output": "", "error": error, "hint": hint}


def add_native_stacks(workers: list[dict[str, Any]]) -> None:
    """Add each worker's `native` dump, the workers read at the same time."""
    py_spy = shutil.which("py-spy")
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(workers)))) as executor:
        dumps = list(executor.map(lambda w: native_stack(py_spy, int(w["pid"])), workers))
    for worker, dump in zip(workers, dumps, strict=True):
        worker["native"] = dump
