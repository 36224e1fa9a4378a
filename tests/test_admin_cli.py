"""The admin commands against a real control server with a fake master.

The commands run in click's CliRunner on a fresh group (`register`), talking
over a real Unix socket to the server of `tests.test_control_api`; the pure
`format_*` functions are tested on their own.
"""

from __future__ import annotations

import io
import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from poolwarden.cli.admin import COMMANDS, register
from poolwarden.cli.admin_format import (
    format_bytes,
    format_elapsed,
    format_health,
    format_pool_action,
    format_pools,
    format_reload,
    format_requests,
    format_uptime,
    format_workers,
)
from poolwarden.cli.common import StateDirError, locate_state_dir
from poolwarden.cli.config_toml import format_config_toml
from poolwarden.config import ConfigError, ConfigIssue, config_from_dict
from poolwarden.control_client import ControlClient
from tests.conftest import wait_until
from tests.test_control_api import (
    FakeTarget,
    Running,
    check_documented,
    pool_dict,
    running_server,
)
from tests.test_control_api import short_dir as short_dir  # a fixture

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "config"
CLEAN_ENV = {"POOLWARDEN_CONFIG": None, "POOLWARDEN_STATE_DIR": None, "COLUMNS": "200"}


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("poolwarden")
    register(group)
    return group


@pytest.fixture
def running(short_dir: str) -> Iterator[Running]:
    with running_server(short_dir) as server:
        yield server


def invoke(cli: click.Group, *args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **(env or {})})


def at(running: Running, *args: str) -> list[str]:
    """`args` with `--state-dir` of the running server."""
    return [*args, "--state-dir", running.state_dir]


def render(renderable: Any, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


# --- registration ---------------------------------------------------------------------


def test_register_adds_every_command(cli: click.Group) -> None:
    assert set(cli.commands) == {"pools", "pool", "wp", "requests", "stack", "config", "health"}


def test_the_real_cli_has_the_admin_commands() -> None:
    from poolwarden.cli import main

    for command in COMMANDS:
        assert command.name is not None
        assert main.commands.get(command.name) is command


def test_register_refuses_a_name_clash(cli: click.Group) -> None:
    with pytest.raises(ValueError, match="'pools' is already defined"):
        register(cli)


# --- pools and pool actions -----------------------------------------------------------


def test_pools_table(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "pools"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["POOL", "STATE", "WORKERS", "QUEUE", "REQUESTS", "LAST", "EVENT"]
    web = next(line for line in lines if line.startswith("web"))
    assert web.split() == ["web", "started", "2", "0", "1234", "-"]
    api = next(line for line in lines if line.startswith("api"))
    assert "disabled (rapid_fail)" in api
    assert "5002 pool disabled by rapid-fail protection" in api


def test_pools_json(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "pools", "--json"))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"pools": list(running.target.pool_table.values())}


def test_pools_in_a_narrow_terminal(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "pools"), env={"COLUMNS": "40"})
    assert result.exit_code == 0
    assert "web" in result.stdout


def test_pool_actions(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "pool", "stop", "web"))
    assert (result.exit_code, result.stdout) == (0, "web: stopped (0 workers)\n")
    result = invoke(cli, *at(running, "pool", "start", "web"))
    assert (result.exit_code, result.stdout) == (0, "web: started (2 workers)\n")
    result = invoke(cli, *at(running, "pool", "recycle", "web", "--json"))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["state"] == "started"


def test_pool_action_refused(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "pool", "start", "web"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == 'poolwarden: pool "web" is already started\n'
    result = invoke(cli, *at(running, "pool", "stop", "nope"))
    assert (result.exit_code, result.stderr) == (1, 'poolwarden: no pool named "nope"\n')


# --- workers and requests -------------------------------------------------------------


def test_wp_table(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "wp"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "PID",
        "POOL",
        "STATE",
        "UPTIME",
        "REQUESTS",
        "LIMIT",
        "IN",
        "USE",
        "RSS",
        "CPU",
    ]
    assert [line.split() for line in lines if line.strip().startswith("10")] == [
        ["101", "web", "ready", "1h02m", "600", "-", "1", "45.2MiB", "3.2%"],
        ["102", "web", "retiring", "12s", "0", "-", "0", "-", "-"],
    ]


def test_wp_pool_filter_and_json(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "wp", "--pool", "web", "--json"))
    assert result.exit_code == 0
    assert [w["pid"] for w in json.loads(result.stdout)["workers"]] == [101, 102]
    assert ("workers", "web") in running.target.calls
    result = invoke(cli, *at(running, "wp", "--pool", "nope"))
    assert (result.exit_code, result.stderr) == (1, 'poolwarden: no pool named "nope"\n')


def test_wp_without_workers(cli: click.Group, running: Running) -> None:
    running.target.worker_rows = []
    result = invoke(cli, *at(running, "wp"))
    assert (result.exit_code, result.stdout) == (0, "no worker processes\n")


def test_requests_table_and_elapsed(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "requests"))
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[2:] if line.strip()]
    assert rows == [
        ["101", "web", "GET", "/slow?x=1", "127.0.0.1:50000", "7.5s", "app"],
        ["101", "web", "POST", "/upload", "-", "0.25s", "responding"],
    ]
    result = invoke(cli, *at(running, "requests", "--elapsed", "5s", "--pool", "web"))
    assert result.exit_code == 0
    assert "/slow" in result.stdout and "/upload" not in result.stdout
    assert ("requests", "web", 5.0) in running.target.calls
    result = invoke(cli, *at(running, "requests", "--elapsed", "1m", "--json"))
    assert json.loads(result.stdout) == {"requests": []}
    result = invoke(cli, *at(running, "requests", "--elapsed", "1m"))
    assert result.stdout == "no requests in flight older than 1m00s\n"


def test_requests_bad_duration_is_a_usage_error(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "requests", "--elapsed", "soon"))
    assert result.exit_code == 2
    assert "invalid duration" in result.stderr


# --- health ------------------------------------------------------------------------------


def test_health(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "health"))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "status: degraded",
        "  web  started",
        "  api  disabled  not ready: pool_disabled, event 7",
    ]
    running.target.pool_table["api"] = pool_dict("api")
    result = invoke(cli, *at(running, "health"))
    assert result.exit_code == 0
    assert result.stdout.startswith("status: ok\n")
    result = invoke(cli, *at(running, "health", "--json"))
    assert (result.exit_code, json.loads(result.stdout)["status"]) == (0, "ok")
    running.target.draining = True
    result = invoke(cli, *at(running, "health", "--json"))
    assert (result.exit_code, json.loads(result.stdout)["status"]) == (1, "draining")


def test_health_when_the_server_fails(cli: click.Group, running: Running) -> None:
    running.target.failing = {"health"}
    result = invoke(cli, *at(running, "health"))
    assert (result.exit_code, result.stderr) == (1, "poolwarden: RuntimeError: boom\n")


# --- config ------------------------------------------------------------------------------


def test_config_show_is_toml_that_reads_back(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "config", "show"))
    assert result.exit_code == 0, result.output
    document = tomllib.loads(result.stdout)
    expected = running.target.config_doc
    assert expected is not None
    rebuilt = config_from_dict(document, "/")
    assert rebuilt.to_dict() == expected
    assert "# user: not set" in result.stdout


def test_config_show_json(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "config", "show", "--json"))
    assert json.loads(result.stdout) == running.target.config_doc


def test_config_show_in_run_mode(cli: click.Group, running: Running) -> None:
    running.target.config_doc = None
    result = invoke(cli, *at(running, "config", "show"))
    assert result.exit_code == 1
    assert result.stderr.startswith("poolwarden: the server runs without a config file")
    assert result.stderr.count("\n") == 1


def test_config_reload(cli: click.Group, running: Running) -> None:
    result = invoke(cli, *at(running, "config", "reload"))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "configuration reloaded",
        "  added:     api2",
        "  removed:   -",
        "  changed:   web",
        "  unchanged: api",
    ]
    result = invoke(cli, *at(running, "config", "reload", "--json"))
    assert json.loads(result.stdout)["added"] == ["api2"]


def test_config_reload_invalid(cli: click.Group, running: Running) -> None:
    running.target.reload_error = ConfigError(
        [
            ConfigIssue("pools.web.threads", "expected int >= 1, got 0"),
            ConfigIssue("sites.main.applications[0].pool", 'no pool named "wbe"'),
        ],
        "/srv/poolwarden.toml",
    )
    result = invoke(cli, *at(running, "config", "reload"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "poolwarden: the config file /srv/poolwarden.toml is invalid; "
        "the running configuration stays",
        "pools.web.threads: expected int >= 1, got 0",
        'sites.main.applications[0].pool: no pool named "wbe"',
    ]


@pytest.mark.parametrize("name", ["demo.toml", "full.toml"])
def test_config_check_good(cli: click.Group, name: str) -> None:
    path = str(EXAMPLES / name)
    result = invoke(cli, "config", "check", path)
    assert (result.exit_code, result.stdout) == (0, f"{path}: OK\n")
    result = invoke(cli, "config", "check", path, "--json")
    assert json.loads(result.stdout) == {"file": path, "ok": True, "issues": [], "warnings": []}


def test_config_check_bad(cli: click.Group, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        (EXAMPLES / "demo.toml").read_text().replace("threads = 8", "threads = 0")
        + '\n[pools.extra]\napp = "no colon"\n'
    )
    result = invoke(cli, "config", "check", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "pools.web.threads: expected int >= 1, got 0",
        'pools.extra.app: expected MODULE:ATTRIBUTE such as "mysite.wsgi:application", '
        'got "no colon"',
    ]
    result = invoke(cli, "config", "check", str(path), "--json")
    body = json.loads(result.stdout)
    assert (result.exit_code, body["ok"], len(body["issues"])) == (1, False, 2)


def test_config_check_warnings_and_missing_file(cli: click.Group, tmp_path: Path) -> None:
    path = tmp_path / "unused.toml"
    path.write_text((EXAMPLES / "full.toml").read_text() + '\n[pools.spare]\napp = "a:b"\n')
    result = invoke(cli, "config", "check", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{path}: OK",
        "warning: pools.spare: no application uses this pool",
    ]
    result = invoke(cli, "config", "check", str(tmp_path / "missing.toml"))
    assert result.exit_code == 1
    assert "cannot read the file" in result.stdout


# --- finding the server --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["pools"],
        ["pool", "start", "web"],
        ["pool", "stop", "web"],
        ["pool", "recycle", "web"],
        ["wp"],
        ["requests", "--elapsed", "5s"],
        ["health"],
        ["config", "show"],
        ["config", "reload"],
        ["pools", "--json"],
    ],
)
def test_without_a_server_one_line_and_exit_1(
    cli: click.Group,
    short_dir: str,
    args: list[str],
) -> None:
    result = invoke(cli, *args, "--state-dir", short_dir)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"poolwarden: no poolwarden server is running in {short_dir} "
        f"(no control socket at {short_dir}/control.sock)\n"
    )


def test_default_state_dir_and_environment(
    cli: click.Group,
    running: Running,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, "pools")
    assert result.stderr == (
        "poolwarden: no poolwarden server is running in .poolwarden "
        "(no control socket at .poolwarden/control.sock)\n"
    )
    result = invoke(cli, "pools", env={"POOLWARDEN_STATE_DIR": running.state_dir})
    assert result.exit_code == 0


def write_config(directory: Path, state_dir: str, extra: str = "") -> Path:
    text = (EXAMPLES / "full.toml").read_text()
    path = directory / "poolwarden.toml"
    path.write_text(f'[server]\nstate_dir = "{state_dir}"\n' + _without_server(text) + extra)
    return path


def _without_server(text: str) -> str:
    """`full.toml` without its [server] table (the tests write their own)."""
    lines, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[server]"
        if not skipping:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_config_option_finds_the_state_dir(
    cli: click.Group,
    short_dir: str,
) -> None:
    state = os.path.join(short_dir, "state")
    os.mkdir(state)
    config = write_config(Path(short_dir), "state")  # relative to the file
    assert locate_state_dir(None, str(config), {}) == state
    with running_server(state) as running:
        result = invoke(cli, "pools", "-c", str(config))
        assert result.exit_code == 0, result.output
        result = invoke(cli, "pools", env={"POOLWARDEN_CONFIG": str(config)})
        assert result.exit_code == 0, result.output
        # An invalid file still names its server, which reports the mistakes.
        broken = write_config(Path(short_dir), "state", '\n[pools.bad]\napp = "x"\n')
        running.target.reload_error = ConfigError([ConfigIssue("pools.bad.app", "bad")])
        result = invoke(cli, "config", "reload", "-c", str(broken))
        assert result.exit_code == 1
        assert result.stderr.splitlines()[1:] == ["pools.bad.app: bad"]


def test_both_options_are_a_usage_error(cli: click.Group, tmp_path: Path) -> None:
    result = invoke(cli, "pools", "--state-dir", "x", "-c", str(EXAMPLES / "demo.toml"))
    assert result.exit_code == 2
    assert "--state-dir or --config, not both" in result.stderr


def test_config_that_is_not_toml(cli: click.Group, tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server\n")
    result = invoke(cli, "pools", "-c", str(path))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"poolwarden: cannot read the state directory from {path}"
    assert len(lines) == 2 and str(path) in lines[1]
    result = invoke(cli, "pools", "-c", str(tmp_path / "missing.toml"))
    assert result.exit_code == 1
    assert "cannot read the file" in result.stderr


def test_locate_state_dir_order(tmp_path: Path) -> None:
    config = write_config(tmp_path, "/srv/state")
    env = {"POOLWARDEN_CONFIG": str(config), "POOLWARDEN_STATE_DIR": "/env/state"}
    assert locate_state_dir("/given", None, env) == "/given"
    assert locate_state_dir(None, str(config), {}) == "/srv/state"
    assert locate_state_dir(None, None, env) == "/srv/state"
    assert locate_state_dir(None, None, {"POOLWARDEN_STATE_DIR": "/env/state"}) == "/env/state"
    assert locate_state_dir(None, None, {}) == ".poolwarden"
    default = tmp_path / "sub" / "c.toml"
    default.parent.mkdir()
    default.write_text("[pools.x]\n")  # invalid, but TOML: the default state dir
    assert locate_state_dir(None, str(default), {}) == str(tmp_path / "sub" / ".poolwarden")
    default.write_text("[pools.x\n")
    with pytest.raises(StateDirError):
        locate_state_dir(None, str(default), {})


# --- formatting (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (3725.5, "1h02m"),
        (2 * 86400 + 4 * 3600, "2d04h"),
        (None, "-"),
        (-1, "-"),
        (float("nan"), "-"),
    ],
)
def test_format_uptime(seconds: float | None, text: str) -> None:
    assert format_uptime(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.004, "0.00s"), (0.25, "0.25s"), (7.5, "7.5s"), (90, "1m30s")]
)
def test_format_elapsed(seconds: float, text: str) -> None:
    assert format_elapsed(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (512, "512B"),
        (2048, "2.00KiB"),
        (47_400_000, "45.2MiB"),
        (3 * 1024**3, "3.00GiB"),
    ],
)
def test_format_bytes(size: int | None, text: str) -> None:
    assert format_bytes(size) == text


def test_format_tables_render() -> None:
    target = FakeTarget()
    pools = render(format_pools(target.pools()))
    assert "disabled (rapid_fail)" in pools
    assert render(format_pools([])) == "no pools\n"
    assert "45.2MiB" in render(format_workers(target.worker_rows))
    requests = render(format_requests(target.request_rows), width=60)
    assert requests.index("/slow") < requests.index("/upload")  # oldest first
    assert render(format_requests([], 5.0)) == "no requests in flight older than 5.0s\n"


def test_format_reload_names_new_listeners() -> None:
    diff = {"added": [], "removed": [], "changed": [], "unchanged": ["web"]}
    assert "opened" not in format_reload(diff)
    text = format_reload({**diff, "bindings_opened": ["127.0.0.1:8001", ":9000"]})
    assert text.splitlines()[-1] == "  opened:    127.0.0.1:8001, :9000"


@pytest.mark.parametrize(
    ("action", "pool", "text"),
    [
        ("stop", pool_dict("web", "stopped"), "web: stopped (0 workers)"),
        ("recycle", pool_dict("web"), "web: recycled (2 workers)"),
        (
            "stop",
            {**pool_dict("web", "stopping", "administrator"), "workers": 1},
            "web: stop requested; now stopping (administrator), 1 worker",
        ),
    ],
)
def test_format_pool_action(action: str, pool: dict[str, Any], text: str) -> None:
    assert format_pool_action(action, pool) == text


def test_format_health() -> None:
    assert format_health({"status": "ok", "pools": {}}) == "status: ok"
    degraded = {
        "status": "degraded",
        "pools": {"web": "started", "broken": "disabled"},
        "not_ready": {"broken": {"state": "disabled", "reason": "pool_disabled", "event": 42}},
    }
    assert format_health(degraded) == (
        "status: degraded\n  web     started\n  broken  disabled  not ready: pool_disabled, event 42"
    )


def test_format_workers_shows_the_request_limit_and_the_connections_in_use() -> None:
    rows = [
        {
            "pid": 10,
            "pool": "web",
            "state": "ready",
            "uptime": 5,
            "requests_served": 7,
            "request_limit": 1000,
            "connections_in_use": 3,
            "capacity": 8,
            "rss": None,
        },
        {
            "pid": 11,
            "pool": "api",
            "state": "ready",
            "uptime": 5,
            "requests_served": 2,
            "request_limit": 0,
            "connections_in_use": 2,
            "capacity": 0,
            "loop_blocked": True,
        },
    ]
    text = render(format_workers(rows), width=120)
    assert "LIMIT" in text and "IN USE" in text
    web, api = (line for line in text.splitlines() if line.strip().startswith(("10", "11")))
    assert "1000" in web and "3/8" in web
    assert "2 blocked" in api


def test_format_config_toml_escapes_and_nesting() -> None:
    document = {
        "server": {"state_dir": 'C:\\dir "q"\n\x7f', "ratio": float("inf"), "user": None},
        "pools": {
            "web": {"env": {}, "list": [], "nested": {"a b": 1}},
            "odd name": {"x": [1, 2.5, True, "s"]},
        },
        "sites": {"main": {"applications": [{"path": "/", "pool": "web"}, {"path": "/a"}]}},
    }
    text = format_config_toml(document)
    parsed = tomllib.loads(text)
    expected = json.loads(json.dumps(document))  # a copy
    del expected["server"]["user"]
    assert parsed == expected
    assert "# user: not set" in text


# --- against a real server ---------------------------------------------------------------


def test_against_a_real_server(cli: click.Group, start_server: Any) -> None:
    """`poolwarden run` serves the API its document describes, and the commands show it."""
    server = start_server("examples.hello:app", "--processes", "2")
    state_dir = str(server.state_dir)
    client = ControlClient(state_dir)
    for path in ["/v1/health", "/v1/server", "/v1/pools", "/v1/pools/default", "/v1/workers"]:
        response = client.request("GET", path)
        assert response.status == 200, (path, response.body)
        check_documented("GET", path, response)
    response = client.request("GET", "/v1/requests?min_elapsed=0")
    check_documented("GET", "/v1/requests", response)
    response = client.request("GET", "/v1/config")
    assert (response.status, response.body["error"]["code"]) == (404, "no_config")
    response = client.request("POST", "/v1/config/reload")
    assert (response.status, response.body["error"]["code"]) == (409, "no_config")
    assert client.get("/v1/server")["pid"] == server.process.pid
    result = invoke(cli, "pools", "--state-dir", state_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split()[:3] == ["default", "started", "2"]
    result = invoke(cli, "wp", "--state-dir", state_dir, "--json")
    assert sorted(w["pid"] for w in json.loads(result.stdout)["workers"]) == server.worker_pids()
    result = invoke(cli, "health", "--state-dir", state_dir)
    assert (result.exit_code, result.stdout.splitlines()[0]) == (0, "status: ok")
    server.stop()
    result = invoke(cli, "pools", "--state-dir", state_dir)
    assert result.exit_code == 1
    assert result.stderr.startswith("poolwarden: no poolwarden server is running in")


SERVE_CONFIG = """
[server]
state_dir = "{state_dir}"

[sites.main]
bindings = ["127.0.0.1:0"]

[[sites.main.applications]]
path = "/"
pool = "web"

[pools.web]
app = "examples.hello:app"
working_dir = "{repo}"
start_mode = "always_running"
"""


def test_against_a_real_server_with_a_config_file(cli: click.Group, start_serve: Any) -> None:
    """`poolwarden serve -c FILE`: config show, reload (good and bad), pool stop and start."""
    server = start_serve(SERVE_CONFIG)
    config = str(server.extra["config_path"])
    result = invoke(cli, "config", "show", "-c", config)
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.stdout)
    assert shown["pools"]["web"]["app"] == "examples.hello:app"
    assert ControlClient(server.state_dir).get("/v1/server")["config_path"] == config
    result = invoke(cli, "config", "reload", "-c", config)
    assert result.exit_code == 0, result.output
    assert "  unchanged: web" in result.stdout.splitlines()
    Path(config).write_text(Path(config).read_text().replace('"always_running"', '"sometimes"'))
    result = invoke(cli, "config", "reload", "-c", config)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[1].startswith("pools.web.start_mode: expected one of")
    result = invoke(cli, "pool", "stop", "web", "-c", config)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(("web: stopped (", "web: stop requested; now stopping"))
    wait_until(lambda: ControlClient(server.state_dir).get("/v1/pools/web")["state"] == "stopped")
    result = invoke(cli, "pool", "start", "web", "-c", config, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "web"


def _leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _leaf_commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_command_takes_state_dir_in_any_position() -> None:
    """A script may pass `--state-dir` to every command, before or after its arguments."""
    from poolwarden.cli import main

    commands = _leaf_commands(main)
    assert ("events", "explain") in commands and ("config", "check") in commands
    for path in commands:
        command: click.Command = main
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        options = {option for param in command.params for option in getattr(param, "opts", [])}
        assert "--state-dir" in options, " ".join(path)
    runner = CliRunner()
    result = runner.invoke(main, ["events", "explain", "5009", "--state-dir", "/nonexistent"])
    assert result.exit_code == 0 and "5009" in result.output
    result = runner.invoke(main, ["events", "explain", "--state-dir", "/nonexistent", "5009"])
    assert result.exit_code == 0 and "5009" in result.output
