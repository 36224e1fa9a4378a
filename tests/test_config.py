"""The config file: schema, IIS defaults, every error with its key path, units.

Pure: documents are parsed from strings and dicts; the only files read are
the example configs and the reference page, to keep them honest.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolwarden import channel as ch
from poolwarden.channel import WebSocketOptions
from poolwarden.config import (
    Config,
    ConfigError,
    ConfigFile,
    ConfigIssue,
    PoolConfig,
    ProcessModelConfig,
    RapidFailConfig,
    RecyclingConfig,
    ServerConfig,
    config_from_dict,
    diff_pools,
    format_issues,
    load_config,
    parse_config,
)
from poolwarden.http.limits import HeadLimits
from poolwarden.settings import PoolSettings
from poolwarden.units import format_duration, format_size, parse_duration, parse_size

REPO = Path(__file__).resolve().parent.parent
BASE = "/srv/conf"

SAMPLE = """
[server]
state_dir = ".poolwarden"
dev_mode = false

[sites.main]
bindings = ["127.0.0.1:8000", "[::1]:8000"]
hostnames = ["example.test", "*.example.test"]

[[sites.main.applications]]
path = "/"
pool = "web"

[[sites.main.applications]]
path = "/api"
pool = "api"

[pools.web]
app = "mysite.wsgi:application"
python = "/srv/mysite/.venv/bin/python"
working_dir = "/srv/mysite"
env = { DJANGO_SETTINGS_MODULE = "mysite.settings" }
start_mode = "on_demand"
auto_start = true
max_processes = 1
threads = 8
queue_length = 1000
user = "www-data"
group = "www-data"

[pools.api]
app = "mysite.asgi:application"
interface = "asgi"
"""


def minimal() -> dict[str, Any]:
    """The smallest valid document: one site, one application, one pool."""
    return {
        "sites": {
            "main": {
                "bindings": ["127.0.0.1:8000"],
                "applications": [{"path": "/", "pool": "web"}],
            }
        },
        "pools": {"web": {"app": "mysite.wsgi:application"}},
    }


def with_value(key: str, value: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """`minimal()` (or a copy of `data`) with the dotted `key` set to `value`."""
    document = copy.deepcopy(data) if data is not None else minimal()
    *parents, last = key.split(".")
    table = document
    for part in parents:
        table = table.setdefault(part, {})
    table[last] = value
    return document


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, BASE)
    return [str(issue) for issue in caught.value.errors]


def problems_in(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), BASE, "poolwarden.toml")
    return [str(issue) for issue in caught.value.errors]


# --- a file that is right -----------------------------------------------------


def test_the_sample_file_loads() -> None:
    config = parse_config(SAMPLE, BASE)
    assert list(config.sites) == ["main"]
    site = config.sites["main"]
    assert site.bindings == ["127.0.0.1:8000", "[::1]:8000"]
    assert site.hostnames == ["example.test", "*.example.test"]
    assert [(app.path, app.pool) for app in site.applications] == [("/", "web"), ("/api", "api")]
    web = config.pools["web"]
    assert web.app == "mysite.wsgi:application"
    assert web.python == "/srv/mysite/.venv/bin/python"
    assert web.working_dir == "/srv/mysite"
    assert web.env == {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
    assert (web.user, web.group) == ("www-data", "www-data")
    assert config.pools["api"].interface == "asgi"
    assert config.server.state_dir == "/srv/conf/.poolwarden"
    assert config.warnings == []


def test_defaults_are_those_of_iis() -> None:
    pool = config_from_dict(minimal(), BASE).pools["web"]
    assert pool.queue_length == 1000
    assert pool.max_processes == 1
    assert pool.start_mode == "on_demand"
    assert pool.auto_start is True
    model = pool.process_model
    assert model.idle_timeout == 20 * 60
    assert model.startup_time_limit == 90
    assert model.shutdown_time_limit == 90
    assert model.pinging_enabled is True
    assert (model.ping_interval, model.ping_response_time) == (30, 90)
    assert model.request_timeout == 0
    recycling = pool.recycling
    assert recycling.time == 29 * 3600
    assert (recycling.requests, recycling.memory, recycling.private_memory) == (0, 0, 0)
    assert recycling.schedule == []
    assert recycling.log_event_on_recycle == ["time", "memory", "private_memory"]
    assert recycling.overlapping is True and recycling.on_config_change is True
    rapid_fail = pool.rapid_fail
    assert rapid_fail.enabled is True
    assert (rapid_fail.max_crashes, rapid_fail.interval) == (5, 5 * 60)
    assert rapid_fail.load_balancer_capability == "http_level"
    assert rapid_fail.orphan_worker is False


def test_defaults_match_run_mode() -> None:
    """The config file and `poolwarden run` share defaults (settings.py)."""
    config = config_from_dict(minimal(), BASE)
    settings = config.pool_settings("web")
    assert settings.threads == 8 and settings.processes == 1
    assert settings.keepalive_timeout == 75 and settings.shutdown_time_limit == 90
    assert settings.access_log is True and settings.access_log_format == "combined"
    assert config.server_settings().head_limits == HeadLimits()
    assert config.server_settings().backlog == 2048


def test_durations_and_sizes_are_numbers_once_loaded() -> None:
    data = with_value("server.head_timeout", "1m30s")
    data = with_value("server.max_head_bytes", "16KiB", data)
    data = with_value("pools.web.recycling", {"memory": "1GiB", "time": 3600}, data)
    config = config_from_dict(data, BASE)
    assert config.server.head_timeout == 90.0
    assert config.server.max_head_bytes == 16384
    assert config.pools["web"].recycling.memory == 1024**3
    assert config.pools["web"].recycling.time == 3600.0


def test_user_and_group_take_names_or_ids() -> None:
    data = with_value("pools.web.user", 33)
    data = with_value("pools.web.group", "www-data", data)
    pool = config_from_dict(data, BASE).pools["web"]
    assert (pool.user, pool.group) == (33, "www-data")


# --- every kind of mistake, with its key path ------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("pools.web.threads", "eight", 'pools.web.threads: expected int, got "eight"'),
        ("pools.web.threads", 0, "pools.web.threads: expected int >= 1, got 0"),
        ("pools.web.max_processes", 0, "pools.web.max_processes: expected int >= 1, got 0"),
        ("pools.web.queue_length", -1, "pools.web.queue_length: expected int >= 1, got -1"),
        ("pools.web.threads", True, "pools.web.threads: expected int, got true"),
        ("pools.web.factory", "yes", 'pools.web.factory: expected bool, got "yes"'),
        ("pools.web.colour", "red", "pools.web.colour: unknown key"),
        ("pools.web.idle_timeout", "5m", "pools.web.idle_timeout: unknown key"),
        ("pools.web.process_model.colour", 1, "pools.web.process_model.colour: unknown key"),
        ("colour", 1, "colour: unknown key"),
        ("server.colour", 1, "server.colour: unknown key"),
        (
            "server.head_timeout",
            "ten seconds",
            'server.head_timeout: invalid duration "ten seconds" (use e.g. "90s", "5m", "29h")',
        ),
        ("server.head_timeout", "0s", 'server.head_timeout: expected duration > 0, got "0s"'),
        ("server.head_timeout", [10], "server.head_timeout: expected duration, got an array"),
        (
            "server.max_head_bytes",
            "lots",
            'server.max_head_bytes: invalid size "lots" (use e.g. "512MiB", "1GiB", "100MB")',
        ),
        (
            "server.log_level",
            "loud",
            'server.log_level: expected one of "critical", "error", "warning", "info", '
            '"debug", got "loud"',
        ),
        (
            "pools.web.interface",
            "cgi",
            'pools.web.interface: expected one of "auto", "wsgi", "asgi", got "cgi"',
        ),
        (
            "pools.web.app",
            "mysite",
            'pools.web.app: expected MODULE:ATTRIBUTE such as "mysite.wsgi:application", '
            'got "mysite"',
        ),
        (
            "pools.web.app",
            "my site:app",
            'pools.web.app: expected MODULE:ATTRIBUTE such as "mysite.wsgi:application", '
            'got "my site:app"',
        ),
        ("pools.web.env", {"PORT": 8000}, "pools.web.env.PORT: expected str, got 8000"),
        ("pools.web.env", "A=1", 'pools.web.env: expected table of str, got "A=1"'),
        ("pools.web.user", ["www"], "pools.web.user: expected str or int, got an array"),
        ("pools.web.process_model", 3, "pools.web.process_model: expected a table, got 3"),
        (
            "pools.web.recycling.schedule",
            ["03:00", "24:00"],
            "pools.web.recycling.schedule[1]: expected a time of day "
            '"HH:MM" or "HH:MM:SS" (24-hour), got "24:00"',
        ),
        (
            "pools.web.recycling.log_event_on_recycle",
            ["time", "bogus"],
            'pools.web.recycling.log_event_on_recycle[1]: expected one of "time", "requests", '
            '"schedule", "memory", "private_memory", "on_demand", "config_change", got "bogus"',
        ),
        (
            "pools.web.recycling.jitter",
            1.5,
            "pools.web.recycling.jitter: expected number >= 0 and <= 1, got 1.5",
        ),
        (
            "pools.web.rapid_fail.auto_shutdown_command",
            [],
            "pools.web.rapid_fail.auto_shutdown_command: expected non-empty array of str, "
            "got an empty array",
        ),
        (
            "pools.web.rapid_fail.load_balancer_capability",
            "tcp",
            'pools.web.rapid_fail.load_balancer_capability: expected one of "http_level", '
            '"tcp_level", got "tcp"',
        ),
        (
            "sites.main.bindings",
            [],
            "sites.main.bindings: expected non-empty array of str, got an empty array",
        ),
        (
            "sites.main.hostnames",
            ["example.test:8000"],
            'sites.main.hostnames[0]: expected a host name such as "example.test" or '
            '"*.example.test" (no port), got "example.test:8000"',
        ),
        (
            "sites.main.bindings",
            ["localhost"],
            'sites.main.bindings[0]: invalid binding "localhost": expected HOST:PORT or unix:PATH',
        ),
        (
            "sites.main.bindings",
            ["127.0.0.1:99999"],
            'sites.main.bindings[0]: invalid binding "127.0.0.1:99999": port 99999 is out of range',
        ),
    ],
)
def test_a_wrong_value_is_reported_at_its_key(key: str, value: Any, expected: str) -> None:
    assert problems(with_value(key, value)) == [expected]


def test_the_websocket_keys_reach_the_pool_settings_and_the_boot_message() -> None:
    data = minimal()
    data["pools"]["web"].update(
        ws_max_size="1MiB",
        ws_ping_interval="5s",
        ws_ping_timeout="2.5s",
        ws_per_message_deflate=False,
        max_websockets=300,
    )
    settings = config_from_dict(data, BASE).pool_settings("web")
    assert settings.websocket_options() == WebSocketOptions(
        max_size=1 << 20,
        ping_interval=5.0,
        ping_timeout=2.5,
        per_message_deflate=False,
        max_websockets=300,
    )


def test_websocket_defaults_are_one_set() -> None:
    """The config file, `poolwarden run` and the Boot message's own default
    (what a worker uses when the master sends none) agree."""
    settings = config_from_dict(minimal(), BASE).pool_settings("web")
    [boot_default] = [f.default for f in msgspec.structs.fields(ch.Boot) if f.name == "websocket"]
    assert settings.websocket_options() == WebSocketOptions() == boot_default
    assert PoolSettings(name="x", app="m:a").websocket_options() == WebSocketOptions()
    assert WebSocketOptions().max_size == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("pools.web.ws_max_size", 0, "pools.web.ws_max_size: expected size > 0, got 0"),
        (
            "pools.web.ws_max_size",
            "huge",
            'pools.web.ws_max_size: invalid size "huge" (use e.g. "512MiB", "1GiB", "100MB")',
        ),
        (
            "pools.web.ws_ping_interval",
            "-1s",
            'pools.web.ws_ping_interval: invalid duration "-1s" (use e.g. "90s", "5m", "29h")',
        ),
        (
            "pools.web.ws_ping_timeout",
            "soon",
            'pools.web.ws_ping_timeout: invalid duration "soon" (use e.g. "90s", "5m", "29h")',
        ),
        (
            "pools.web.ws_per_message_deflate",
            "on",
            'pools.web.ws_per_message_deflate: expected bool, got "on"',
        ),
        ("pools.web.max_websockets", -1, "pools.web.max_websockets: expected int >= 0, got -1"),
    ],
)
def test_a_wrong_websocket_value_is_reported_at_its_key(
    key: str, value: Any, expected: str
) -> None:
    assert problems(with_value(key, value)) == [expected]


def test_an_application_naming_a_missing_pool() -> None:
    data = with_value(
        "sites.main.applications",
        [{"path": "/", "pool": "web"}, {"path": "/api", "pool": "apii"}],
    )
    assert problems(data) == ['sites.main.applications[1].pool: no pool named "apii"']


def test_application_paths_start_with_a_slash_and_are_unique() -> None:
    apps = [
        {"path": "/", "pool": "web"},
        {"path": "api", "pool": "web"},
        {"path": "/x", "pool": "web"},
        {"path": "/x/", "pool": "web"},
    ]
    assert problems(with_value("sites.main.applications", apps)) == [
        'sites.main.applications[1].path: must start with "/", got "api"',
        'sites.main.applications[3].path: "/x" is already the path of applications[2]',
    ]


def test_a_missing_required_key() -> None:
    assert problems(with_value("pools.web", {"threads": 2})) == [
        "pools.web.app: required key missing"
    ]
    del_apps = minimal()
    del del_apps["sites"]["main"]["applications"]
    assert problems(del_apps) == ["sites.main.applications: required key missing"]


def test_names_of_pools_and_sites_are_plain() -> None:
    data = minimal()
    data["pools"]["my pool"] = {"app": "a:b"}
    data["sites"]["site.one"] = copy.deepcopy(data["sites"].pop("main"))
    assert problems(data) == [
        'sites."site.one": invalid key: use a name made of letters, digits, "_" and "-"',
        'pools."my pool": invalid key: use a name made of letters, digits, "_" and "-"',
    ]


def test_at_least_one_site_and_one_pool() -> None:
    assert problems({}) == [
        "sites: no sites: define at least one [sites.NAME]",
        "pools: no pools: define at least one [pools.NAME]",
    ]
    # A section of the wrong type is reported once, not also as missing.
    assert problems({"sites": 3, "pools": {}}) == [
        "sites: expected table of table, got 3",
        "pools: no pools: define at least one [pools.NAME]",
    ]


def test_an_unused_pool_is_a_warning() -> None:
    data = with_value("pools.batch", {"app": "jobs:app"})
    config = config_from_dict(data, BASE)
    assert config.warnings == [ConfigIssue("pools.batch", "no application uses this pool")]


# --- sites sharing a binding --------------------------------------------------


def two_sites(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    app = [{"path": "/", "pool": "web"}]
    data = minimal()
    data["sites"] = {
        "a": {"bindings": ["127.0.0.1:8000"], "applications": app, **first},
        "b": {"bindings": ["127.0.0.1:8000"], "applications": app, **second},
    }
    return data


def test_sites_on_one_binding_are_told_apart_by_host_name() -> None:
    config = config_from_dict(
        two_sites({"hostnames": ["a.test"]}, {"hostnames": ["b.test", "*.a.test"]}), BASE
    )
    assert config.server_settings().binds == ["127.0.0.1:8000"]


def test_a_host_name_claimed_by_two_sites_on_one_binding() -> None:
    data = two_sites({"hostnames": ["a.test"]}, {"hostnames": ["b.test", "A.test."]})
    assert problems(data) == [
        'sites.b.hostnames[1]: "A.test." on "127.0.0.1:8000" is already claimed by site "a"'
    ]


def test_the_same_host_name_on_different_bindings_is_fine() -> None:
    data = two_sites({"hostnames": ["a.test"]}, {"hostnames": ["a.test"]})
    data["sites"]["b"]["bindings"] = ["127.0.0.1:9000"]
    config_from_dict(data, BASE)


def test_at_most_one_site_per_binding_takes_any_host() -> None:
    assert problems(two_sites({}, {"hostnames": []})) == [
        'sites.b.hostnames: site "a" already takes any host on "127.0.0.1:8000": '
        "give one of them hostnames"
    ]


def test_one_address_is_written_one_way() -> None:
    data = two_sites({"hostnames": ["a.test"]}, {"hostnames": ["b.test"]})
    data["sites"]["a"]["bindings"] = [":8000"]
    data["sites"]["b"]["bindings"] = ["0.0.0.0:8000"]
    assert problems(data) == [
        'sites.b.bindings[0]: "0.0.0.0:8000" is the address of ":8000" (sites.a.bindings[0]): '
        "write it the same way so that the sites share one listener"
    ]


# --- all at once -------------------------------------------------------------------


def test_every_mistake_is_reported_at_once() -> None:
    text = """
        colour = "red"

        [server]
        head_timeout = "ten seconds"

        [sites.main]
        bindings = ["127.0.0.1:8000", "nope"]

        [[sites.main.applications]]
        path = "/"
        pool = "web"

        [[sites.main.applications]]
        path = "/api"
        pool = "apii"

        [pools.web]
        app = "mysite.wsgi:application"
        threads = "eight"
        colour = "blue"

        [pools.web.process_model]
        startup_time_limit = 0
    """
    assert problems_in(text) == [
        "colour: unknown key",
        'server.head_timeout: invalid duration "ten seconds" (use e.g. "90s", "5m", "29h")',
        'pools.web.threads: expected int, got "eight"',
        "pools.web.colour: unknown key",
        "pools.web.process_model.startup_time_limit: expected duration > 0, got 0",
        'sites.main.bindings[1]: invalid binding "nope": expected HOST:PORT or unix:PATH',
        'sites.main.applications[1].pool: no pool named "apii"',
    ]


def test_a_mistake_in_a_pool_does_not_cascade() -> None:
    """A pool with a wrong key still exists for the applications that name it."""
    assert problems(with_value("pools.web.threads", "x")) == [
        'pools.web.threads: expected int, got "x"'
    ]


def test_the_error_text_lists_one_issue_per_line() -> None:
    issues = [ConfigIssue("a.b", "first"), ConfigIssue("c", "second"), ConfigIssue("", "third")]
    assert format_issues(issues) == "a.b: first\nc: second\nthird"
    error = ConfigError(issues, "x.toml")
    assert str(error) == format_issues(issues)
    assert error.errors == issues and error.source == "x.toml"


def test_a_toml_syntax_error_names_file_line_and_column() -> None:
    assert problems_in("[server]\nbacklog = \n") == [
        "poolwarden.toml:2:11: invalid TOML: invalid value"
    ]
    assert problems_in("[sites.main]\n[sites.main]\n") == [
        "poolwarden.toml:2:12: invalid TOML: cannot declare ('sites', 'main') twice"
    ]
    assert problems_in('[server]\nstate_dir = "x') == [
        "poolwarden.toml:2:15: invalid TOML: unterminated string"
    ]


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: cannot read the file: No such file or directory"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


# --- paths ------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    data = with_value("server.state_dir", "state")
    data = with_value("pools.web.working_dir", "../app", data)
    data = with_value("pools.web.python", "venv/bin/python", data)
    data = with_value("pools.other", {"app": "a:b", "python": "python3.12"}, data)
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "poolwarden.toml"
    path.write_text(_toml(data))
    config = load_config(path)
    assert config.base_dir == str(tmp_path / "etc")
    assert config.server.state_dir == str(tmp_path / "etc" / "state")
    assert config.pools["web"].working_dir == str(tmp_path / "app")
    assert config.pools["web"].python == str(tmp_path / "etc" / "venv" / "bin" / "python")
    assert config.pools["other"].python == "python3.12"  # found through PATH
    assert config.pools["other"].working_dir == str(tmp_path / "etc")  # the default: "."


def test_absolute_paths_and_the_default_interpreter_stay() -> None:
    data = with_value("pools.web.working_dir", "/srv/app")
    pool = config_from_dict(data, BASE).pools["web"]
    assert pool.working_dir == "/srv/app"
    assert pool.python == sys.executable


def _toml(data: dict[str, Any]) -> str:
    """Just enough of a TOML writer for the documents of these tests."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict) and not _tables(v)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in scalars.items())
        for key, value in body.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                table(name, value)
            elif _tables(value):
                for item in value:
                    lines.append(f"[[{name}]]")
                    lines.extend(f"{k} = {json.dumps(v)}" for k, v in item.items())

    table("", data)
    return "\n".join(lines) + "\n"


def _tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


# --- conversions -------------------------------------------------------------------


def test_routing_table_routes_as_configured() -> None:
    table = parse_config(SAMPLE, BASE).routing_table()

    def pool(binding: str, host: str, path: str) -> str | None:
        match = table.route(binding, host, path)
        return None if match is None else match.application.pool

    assert pool("127.0.0.1:8000", "example.test", "/") == "web"
    assert pool("127.0.0.1:8000", "example.test", "/api/v1") == "api"
    assert pool("[::1]:8000", "www.example.test", "/apix") == "web"
    assert pool("127.0.0.1:8000", "other.test", "/") is None
    assert pool("127.0.0.1:9000", "example.test", "/") is None
    match = table.route("127.0.0.1:8000", "example.test", "/api/x")
    assert match is not None and match.script_name == "/api"


def test_bindings_are_stripped_and_mount_paths_normalized() -> None:
    data = with_value("sites.main.bindings", [" 127.0.0.1:8000 "])
    data = with_value(
        "sites.main.applications",
        [{"path": "/", "pool": "web"}, {"path": "/api/", "pool": "web"}],
        data,
    )
    config = config_from_dict(data, BASE)
    assert config.sites["main"].bindings == ["127.0.0.1:8000"]
    assert [app.path for app in config.sites["main"].applications] == ["/", "/api"]
    assert config.routing_table().route("127.0.0.1:8000", "x", "/api/y") is not None


def test_pool_settings() -> None:
    config = parse_config(SAMPLE, BASE)
    data = with_value("pools.web.process_model", {"shutdown_time_limit": "2m"}, config.to_dict())
    data = with_value("pools.web.max_processes", 4, data)
    data = with_value("pools.web.keepalive_timeout", "5s", data)
    settings = config_from_dict(data, BASE).pool_settings("web")
    assert settings.name == "web"
    assert settings.app == "mysite.wsgi:application"
    assert settings.processes == 4
    assert settings.shutdown_time_limit == 120.0
    assert settings.keepalive_timeout == 5.0
    assert settings.python == "/srv/mysite/.venv/bin/python"
    assert settings.working_dir == "/srv/mysite"
    assert settings.env == {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
    with pytest.raises(KeyError):
        config.pool_settings("nope")


def test_server_settings_collect_every_binding_once() -> None:
    data = two_sites({"hostnames": ["a.test"]}, {"hostnames": ["b.test"]})
    data["sites"]["a"]["bindings"] = ["127.0.0.1:8000", "unix:/run/pw.sock"]
    data["sites"]["b"]["bindings"] = ["127.0.0.1:8000", "127.0.0.1:8443"]
    data["server"] = {
        "state_dir": "/var/lib/poolwarden",
        "head_timeout": "30s",
        "max_head_bytes": "16KiB",
        "max_request_line": 4094,
        "max_header_count": 50,
        "backlog": 128,
        "log_level": "debug",
    }
    server = config_from_dict(data, BASE).server_settings()
    assert server.binds == ["127.0.0.1:8000", "unix:/run/pw.sock", "127.0.0.1:8443"]
    assert server.state_dir == "/var/lib/poolwarden"
    assert server.head_limits == HeadLimits(
        max_request_line=4094, max_header_count=50, max_head_bytes=16384, head_timeout=30.0
    )
    assert (server.backlog, server.log_level) == (128, "debug")
    assert server.on_startup_failure == "serve"


def test_to_dict_is_plain_data_that_loads_back() -> None:
    config = parse_config(SAMPLE, BASE)
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["pools"]["web"]["process_model"]["idle_timeout"] == 1200.0
    assert data["server"]["max_head_bytes"] == 32768
    again = config_from_dict(data, "/elsewhere")
    assert (again.server, again.sites, again.pools) == (config.server, config.sites, config.pools)


def test_diff_pools() -> None:
    old = config_from_dict(
        with_value("pools", {"web": {"app": "a:b"}, "api": {"app": "c:d"}, "gone": {"app": "e:f"}}),
        BASE,
    )
    new_pools = {
        "web": {"app": "a:b"},
        "api": {"app": "c:d", "recycling": {"time": "1h"}},
        "new": {"app": "g:h"},
    }
    new = config_from_dict(with_value("pools", new_pools), BASE)
    diff = diff_pools(old, new)
    assert diff == (["new"], ["gone"], ["api"], ["web"])
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == tuple(diff)
    assert diff_pools(new, new) == ([], [], [], ["web", "api", "new"])


# --- the example configs and the reference page --------------------------------------


def test_the_demo_config_loads() -> None:
    config = load_config(REPO / "examples" / "config" / "demo.toml")
    assert config.warnings == []
    assert config.pools["web"].app == "examples.site_wsgi:app"
    assert config.pools["web"].max_processes == 2
    assert config.pools["api"].app == "examples.site_asgi:app"
    assert config.pools["web"].working_dir == str(REPO)
    assert config.server_settings().binds == ["127.0.0.1:8000"]
    match = config.routing_table().route("127.0.0.1:8000", "localhost", "/api/scope")
    assert match is not None and match.application.pool == "api"


def test_the_full_example_sets_every_key_to_its_default() -> None:
    config = load_config(REPO / "examples" / "config" / "full.toml")
    assert config.server == ServerConfig(state_dir=config.server.state_dir)
    expected = PoolConfig(app="examples.site_wsgi:app", working_dir=config.base_dir)
    assert config.pools["web"] == expected


def schema_keys() -> set[str]:
    sections: list[type[msgspec.Struct]] = [
        ServerConfig,
        PoolConfig,
        ProcessModelConfig,
        RecyclingConfig,
        RapidFailConfig,
    ]
    keys = {field.name for section in sections for field in msgspec.structs.fields(section)}
    return keys | {"bindings", "hostnames", "applications", "path", "pool"}


def test_the_reference_page_describes_every_key() -> None:
    page = (REPO / "docs" / "config.md").read_text()
    missing = sorted(key for key in schema_keys() if f"`{key}`" not in page)
    assert missing == []


def test_the_full_example_lists_every_key() -> None:
    text = (REPO / "examples" / "config" / "full.toml").read_text()
    written = re.findall(r"^#? ?([a-z_]+) =|\.([a-z_]+)\]", text, re.MULTILINE)
    missing = sorted(schema_keys() - {key for pair in written for key in pair})
    assert missing == []


def test_the_schema_is_one_document() -> None:
    """`ConfigFile` validates a whole checked document on its own, too."""
    document = msgspec.convert(minimal(), ConfigFile)
    assert list(document.pools) == ["web"]
    assert isinstance(config_from_dict(minimal(), BASE), Config)


# --- units -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("29h", 104400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("90", 90.0),
        (90, 90.0),
        (0.25, 0.25),
        ("1d2h3m4s5ms", 93784.005),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten seconds", 'invalid duration "ten seconds" (use e.g. "90s", "5m", "29h")'),
        ("", 'invalid duration "" (use e.g. "90s", "5m", "29h")'),
        ("90 s x", 'invalid duration "90 s x" (use e.g. "90s", "5m", "29h")'),
        ("-5s", 'invalid duration "-5s" (use e.g. "90s", "5m", "29h")'),
        (-5, 'invalid duration -5 (use e.g. "90s", "5m", "29h"): must not be negative'),
        (math.inf, 'invalid duration inf (use e.g. "90s", "5m", "29h")'),
        (True, 'invalid duration true (use e.g. "90s", "5m", "29h")'),
        (
            "30m1h",
            'invalid duration "30m1h" (use e.g. "90s", "5m", "29h"): write each unit once, '
            "largest first",
        ),
        ("5M", 'invalid duration "5M" (use e.g. "90s", "5m", "29h")'),
    ],
)
def test_invalid_durations(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * 1024**2),
        ("1GiB", 1024**3),
        ("32KiB", 32768),
        ("100MB", 100_000_000),
        ("4096", 4096),
        (4096, 4096),
        ("1.5KiB", 1536),
        ("2 TiB", 2 * 1024**4),
        ("10b", 10),
        ("512mib", 512 * 1024**2),
        (0, 0),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", 'invalid size "lots" (use e.g. "512MiB", "1GiB", "100MB")'),
        ("12 parsecs", 'invalid size "12 parsecs" (use e.g. "512MiB", "1GiB", "100MB")'),
        (1.5, 'invalid size 1.5 (use e.g. "512MiB", "1GiB", "100MB")'),
        (
            "1.5",
            'invalid size "1.5" (use e.g. "512MiB", "1GiB", "100MB"): not a whole number of bytes',
        ),
        (
            "0.1KiB",
            'invalid size "0.1KiB" (use e.g. "512MiB", "1GiB", "100MB"): '
            "not a whole number of bytes",
        ),
        (-1, 'invalid size -1 (use e.g. "512MiB", "1GiB", "100MB"): must not be negative'),
    ],
)
def test_invalid_sizes(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(value)
    assert str(caught.value) == message


def test_formatting_units() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.5) == "500ms"
    assert format_duration(0) == "0s"
    assert format_duration(104400) == "1d5h"
    assert format_size(32768) == "32KiB"
    assert format_size(1000) == "1000"
    assert format_size(0) == "0"


@given(st.integers(min_value=0, max_value=10**13))
def test_durations_round_trip_to_the_millisecond(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.lists(st.integers(min_value=0, max_value=10**6), min_size=5, max_size=5),
    st.sampled_from(["", " "]),
)
def test_a_written_sum_of_units_is_its_total(counts: list[int], gap: str) -> None:
    units = ["d", "h", "m", "s", "ms"]
    parts = [f"{count}{unit}" for count, unit in zip(counts, units, strict=True) if count]
    text = gap.join(parts) or "0s"
    total_ms = sum(
        count * scale
        for count, scale in zip(counts, [86400000, 3600000, 60000, 1000, 1], strict=True)
    )
    assert parse_duration(text) == total_ms / 1000


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_a_bare_number_is_seconds(seconds: float) -> None:
    assert parse_duration(seconds) == seconds


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=999))
def test_a_bare_numeric_string_is_seconds(whole: int, millis: int) -> None:
    assert parse_duration(f"{whole}.{millis:03d}") == (whole * 1000 + millis) / 1000


@given(st.integers(min_value=0, max_value=2**60))
def test_sizes_round_trip(size: int) -> None:
    assert parse_size(format_size(size)) == size
    assert parse_size(str(size)) == size


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(
        [("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("kB", 1000), ("MB", 10**6)]
    ),
)
def test_a_size_with_a_unit_is_its_bytes(count: int, unit: tuple[str, int]) -> None:
    assert parse_size(f"{count}{unit[0]}") == count * unit[1]


@given(st.text(max_size=20))
def test_unit_parsers_refuse_with_value_error_only(text: str) -> None:
    for parse in (parse_duration, parse_size):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert value >= 0 and math.isfinite(value)


@pytest.mark.parametrize("value", ["healthz", "/healthz?ready=1", "/healthz#x", "/health z"])
def test_the_health_path_is_a_path_alone(value: str) -> None:
    """A query or fragment could never match: the front end compares the path."""
    assert problems(with_value("server.health_path", value)) == [
        'server.health_path: expected a path such as "/healthz" (no query, no fragment), '
        f"got {json.dumps(value)}"
    ]


def test_the_health_path_reaches_the_server_and_the_routing_table() -> None:
    config = config_from_dict(with_value("server.health_path", "/-/ready"), BASE)
    assert config.server_settings().health_path == "/-/ready"
    assert config.routing_table().health_path == "/-/ready"
    assert config_from_dict(minimal(), BASE).routing_table().health_path is None
