"""`launch_wrapper`: a command in front of the worker's (real processes).

The wrappers are shell scripts: one that `exec`s the worker (as `env`,
`nice` or a site's own script would), one that runs it as a child and waits
(as a debugger or `strace` does), so the Python worker is not the process
the master started.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from poolwarden.config import ConfigError, parse_config
from tests.conftest import POOLWARDEN, REPO, Server, one_pool_config, wait_until

APP = "tests.apps.dump_apps:app"


def wrapper_script(tmp_path: Path, name: str, run: str) -> tuple[Path, Path]:
    """An executable script that writes its argv (one per line) to a marker
    file, then runs the worker as `run` says; (script, marker)."""
    marker = tmp_path / f"{name}.argv"
    script = tmp_path / f"{name}.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{marker}"\n{run}\n')
    script.chmod(0o755)
    return script, marker


def serve_wrapped(start_serve: object, script: Path) -> Server:
    config = one_pool_config(
        "web", APP, f'start_mode = "always_running"\nlaunch_wrapper = ["{script}"]'
    )
    server = start_serve(config)  # type: ignore[operator]
    assert isinstance(server, Server)
    server.wait_for_workers(1)
    return server


def served_by(server: Server) -> dict[str, int]:
    status, _, body = server.get("/")
    assert status == 200
    answer: dict[str, int] = json.loads(body)
    return answer


def test_a_wrapper_that_execs_the_worker_runs_in_front_of_it(
    start_serve: object, tmp_path: Path
) -> None:
    script, marker = wrapper_script(tmp_path, "exec-wrapper", 'exec "$@"')
    server = serve_wrapped(start_serve, script)
    argv = marker.read_text().splitlines()
    assert argv[:3] == [sys.executable, "-m", "poolwarden.worker"]
    assert argv[6] == "0"  # MASTER_PID: under a wrapper the parent is not checked
    [pid] = server.worker_pids()
    for _ in range(3):
        answer = served_by(server)
        assert answer["pid"] == pid
        assert answer["ppid"] == server.process.pid  # exec: the master is still the parent


def test_a_wrapper_that_stays_the_parent_serves_and_its_worker_is_killed_with_it(
    start_serve: object, tmp_path: Path
) -> None:
    script, marker = wrapper_script(tmp_path, "child-wrapper", '"$@"\nexit $?')
    server = serve_wrapped(start_serve, script)
    [wrapper_pid] = server.worker_pids()
    answer = served_by(server)
    python_pid = answer["pid"]
    assert python_pid != wrapper_pid
    assert answer["ppid"] == wrapper_pid
    assert marker.read_text().splitlines()[1:3] == ["-m", "poolwarden.worker"]
    listed = subprocess.run(
        [*POOLWARDEN, "wp", "--json", "--state-dir", str(server.state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    [row] = json.loads(listed.stdout)["workers"]
    assert (row["pid"], row["python_pid"]) == (wrapper_pid, python_pid)
    # Two SIGINTs kill the workers at once: the wrapper's whole process group.
    server.signal(signal.SIGINT)
    server.signal(signal.SIGINT)
    server.wait()
    wait_until(lambda: not psutil.pid_exists(python_pid), what="the wrapped worker to be gone")


def test_a_wrapper_not_on_path_is_refused_with_its_key() -> None:
    text = one_pool_config("web", APP, 'launch_wrapper = ["gdbx-not-installed", "--args"]')
    with pytest.raises(ConfigError) as caught:
        parse_config(text.format(state_dir="/tmp/s", repo="/tmp"), "/tmp")
    assert [str(issue) for issue in caught.value.errors] == [
        'pools.web.launch_wrapper[0]: "gdbx-not-installed" not found on PATH'
    ]


def test_a_wrapper_path_must_be_an_executable_file(tmp_path: Path) -> None:
    plain = tmp_path / "not-executable.sh"
    plain.write_text("#!/bin/sh\n")
    for program, reason in (
        ("./missing.sh", f"no such file ({tmp_path / 'missing.sh'})"),
        ("./not-executable.sh", f"not executable ({plain})"),
    ):
        text = one_pool_config("web", APP, f'launch_wrapper = ["{program}"]')
        with pytest.raises(ConfigError) as caught:
            parse_config(text.format(state_dir="s", repo=str(tmp_path)), str(tmp_path))
        assert [str(issue) for issue in caught.value.errors] == [
            f'pools.web.launch_wrapper[0]: "{program}": {reason}'
        ]


def test_a_wrapper_is_looked_up_on_the_pools_own_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mywrap").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "mywrap").chmod(0o755)
    keys = f'launch_wrapper = ["mywrap"]\nenv = {{{{ PATH = "{bin_dir}" }}}}'
    text = one_pool_config("web", APP, keys).format(state_dir="s", repo=str(tmp_path))
    config = parse_config(text, str(tmp_path))
    assert config.pool_settings("web").launch_wrapper == ("mywrap",)
    relative = one_pool_config("web", APP, 'launch_wrapper = ["./bin/mywrap", "-x"]')
    config = parse_config(relative.format(state_dir="s", repo=str(tmp_path)), str(tmp_path))
    assert config.pool_settings("web").launch_wrapper == (str(bin_dir / "mywrap"), "-x")


def test_wrapper_arguments_are_non_empty_strings() -> None:
    text = one_pool_config("web", APP, 'launch_wrapper = ["sh", "", 3]')
    with pytest.raises(ConfigError) as caught:
        parse_config(text.format(state_dir="/tmp/s", repo="/tmp"), "/tmp")
    assert [issue.path for issue in caught.value.errors] == [
        "pools.web.launch_wrapper[1]",
        "pools.web.launch_wrapper[2]",
    ]
