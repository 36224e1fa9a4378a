"""Make sure wrk and the peer servers exist, installing them on a fresh machine.

The harness must run on a machine that has only ``.venv``: every tool it needs is
installed here, idempotently, so ``make bench`` is the only step. The peers (the
``bench`` dependency group of ``uv.lock``) live in a separate venv (``.venv-bench``) so that their dependencies never leak into the project's
own environment, which the server under test and the test suite share.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_BIN = REPO_ROOT / ".venv" / "bin"
BENCH_VENV = REPO_ROOT / ".venv-bench"
BENCH_BIN = BENCH_VENV / "bin"
PEER_DISTRIBUTIONS = ("gunicorn", "uvicorn", "uvloop", "httptools", "granian")


class ToolError(RuntimeError):
    """A tool the harness cannot do without is missing and could not be installed."""


@dataclass(frozen=True)
class Tools:
    """Paths of the executables the harness runs."""

    wrk: str
    taskset: str | None


def ensure_tools() -> Tools:
    """Install whatever is missing and return the paths to use."""
    wrk = _ensure_wrk()
    _ensure_peer_venv()
    return Tools(wrk=wrk, taskset=shutil.which("taskset"))


def _ensure_wrk() -> str:
    """Find wrk, or install Debian's package (refreshing the lists only if needed)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise ToolError("wrk is not installed and we are not root: run `apt-get install wrk`")
    print("bench: installing wrk with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        raise ToolError("could not install wrk with apt-get")
    return found


def _ensure_peer_venv() -> None:
    """Make ``.venv-bench`` exactly the lock file's ``bench`` group.

    The peers are locked in ``uv.lock`` like everything else, so every machine
    measures the same releases. ``uv sync`` installs nothing when the environment
    already matches the lock; an interrupted install is simply completed.
    """
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        raise ToolError("uv is not installed: run the benchmark with `make bench`")
    print(f"bench: syncing the peer servers into {BENCH_VENV} from uv.lock", flush=True)
    argv = [
        uv,
        "sync",
        "--locked",
        "--quiet",
        "--only-group",
        "bench",
        "--no-install-project",
        "--python",
        sys.executable,
    ]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(BENCH_VENV), "UV_PYTHON_DOWNLOADS": "never"}
    if subprocess.run(argv, cwd=REPO_ROOT, env=env, check=False).returncode != 0:
        raise ToolError(f"could not install the peer servers: `{' '.join(argv)}` failed")
    if not _peer_executables_exist():
        raise ToolError(f"uv finished but a peer executable is missing from {BENCH_BIN}")


def _peer_executables_exist() -> bool:
    return all((BENCH_BIN / name).exists() for name in ("gunicorn", "uvicorn", "granian"))


def peer_versions() -> dict[str, str]:
    """Versions of the peer servers and their speed-ups, for the JSON record."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[name] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    argv = [str(BENCH_BIN / "python"), "-c", code, *PEER_DISTRIBUTIONS]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        return {}
    versions: dict[str, str] = json.loads(result.stdout)
    return versions


def wrk_version(wrk: str) -> str:
    """wrk prints its version on the first line of its usage text (to stderr or stdout)."""
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False, timeout=10)
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
