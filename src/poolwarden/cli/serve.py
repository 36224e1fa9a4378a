"""`poolwarden run` and `poolwarden serve`: the commands that become the master.

    poolwarden run MODULE:ATTR [options]   one pool, settings from the options
    poolwarden serve -c FILE               the sites and pools of a config file
        │ ServerSettings + [PoolSettings]
        ▼
    Master(...).run() ──▶ its exit status is the command's

Both configure logging (the master logs to stderr) and hand over to
`poolwarden.master.server.Master`, imported only when the command runs, so
that the admin commands never load the master. An invalid config file ends
`serve` before anything starts, every mistake on stderr (exit 1).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import click

from poolwarden.cli.common import add_commands, state_dir_option
from poolwarden.http.limits import HeadLimits
from poolwarden.settings import PoolSettings, ServerSettings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _size_option(name: str, value: str) -> int:
    from poolwarden.units import parse_size

    try:
        return parse_size(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=name) from None


def duration(minimum: float = 0.0) -> Callable[[click.Context, click.Parameter, str], float]:
    """A time option written as the config file writes it ("90s", "20m",
    "1h30m") or as plain seconds ("90", "0.5"), with a lower bound: the
    option's callback, which turns it into seconds."""

    def convert(ctx: click.Context, param: click.Parameter, value: str) -> float:
        from poolwarden.units import format_duration, parse_duration

        try:
            seconds = parse_duration(value)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx, param) from None
        if seconds < minimum:
            raise click.BadParameter(
                f"{value!r} is less than {format_duration(minimum)}", ctx, param
            )
        return seconds

    return convert


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="[%(asctime)s] [master %(process)d] %(levelname)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


@click.command("run")
@click.argument("app")
@click.option(
    "-b",
    "--bind",
    "binds",
    multiple=True,
    metavar="HOST:PORT|unix:PATH",
    help="Address to listen on; repeatable.  [default: 127.0.0.1:8000]",
)
@click.option(
    "-p",
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Worker processes.",
)
@click.option(
    "-t",
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="WSGI threads per worker.",
)
@click.option(
    "--max-concurrency",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="ASGI: connections in use per worker before the pool queues them (0: no limit).",
)
@click.option(
    "--interface",
    type=click.Choice(["auto", "wsgi", "asgi"]),
    default="auto",
    show_default=True,
    help="How to call the app; auto detects ASGI by its signature.",
)
@click.option("--factory", is_flag=True, help="APP is a factory: call it to get the app.")
@state_dir_option
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log every request to stdout.",
)
@click.option(
    "--access-log-format",
    type=click.Choice(["combined", "json"]),
    default="combined",
    show_default=True,
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option(
    "--events-stdout",
    is_flag=True,
    help="Also write every event as a JSON line to stdout (for log shippers).",
)
@click.option(
    "--dev-mode",
    is_flag=True,
    help="Show the app's start-up traceback in 503 pages (never on a public server).",
)
@click.option(
    "--on-startup-failure",
    type=click.Choice(["exit", "exit-now", "serve"]),
    default="exit",
    show_default=True,
    help="If the app cannot start before anything was served: exit: retry with the back-off "
    "up to the rapid-fail limit, then exit 3; exit-now: exit 3 at once; serve: answer 503.",
)
@click.option(
    "--keepalive-timeout",
    default="75s",
    show_default=True,
    metavar="DURATION",
    callback=duration(),
    help="How long an idle keep-alive connection is kept.",
)
@click.option(
    "--head-timeout",
    default="10s",
    show_default=True,
    metavar="DURATION",
    callback=duration(0.1),
    help="How long a client has to send a request head (else 408).",
)
@click.option(
    "--startup-time-limit",
    default="90s",
    show_default=True,
    metavar="DURATION",
    callback=duration(),
    help="How long a worker has to load the app; past it its stacks are dumped and it is "
    "killed (0: no limit).",
)
@click.option(
    "--max-requests",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Recycle a worker after this many requests, with overlap (0: never).",
)
@click.option(
    "--memory-limit",
    default="0",
    show_default=True,
    help='Recycle a worker whose RSS passes this size, with overlap ("512MiB"; 0: never).',
)
@click.option(
    "--ping-interval",
    default="30s",
    show_default=True,
    metavar="DURATION",
    callback=duration(),
    help="Time between pings of each worker (0: no pings).",
)
@click.option(
    "--ping-response-time",
    default="90s",
    show_default=True,
    metavar="DURATION",
    callback=duration(0.01),
    help="How long a worker has to answer a ping before it is declared hung, its stacks "
    "dumped, and it is killed.",
)
@click.option(
    "--shutdown-time-limit",
    default="90s",
    show_default=True,
    metavar="DURATION",
    callback=duration(),
    help="How long workers get to finish at shutdown before they are killed.",
)
@click.option(
    "--request-timeout",
    default="0",
    show_default=True,
    metavar="DURATION",
    callback=duration(),
    help="How long a request may run; past it the client gets 504 and the request's stack "
    "is logged (0: no limit).",
)
@click.option(
    "--request-timeout-action",
    type=click.Choice(["log", "recycle", "kill"]),
    default="log",
    show_default=True,
    help="Then: let the thread run on (log), replace the worker with overlap, or kill it.",
)
@click.option(
    "--idle-timeout",
    default="0",
    show_default=True,
    metavar="DURATION",
    callback=duration(),
    help="Stop the worker after this long without a request; the next request "
    "starts it again (0: keep it running).",
)
@click.option(
    "--backlog", default=2048, show_default=True, type=click.IntRange(1), help="Listen backlog."
)
@click.option(
    "--queue-length",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Connections that may wait for a worker before 503.",
)
def run(
    app: str,
    binds: tuple[str, ...],
    processes: int,
    threads: int,
    max_concurrency: int,
    interface: str,
    factory: bool,
    state_dir: str,
    access_log: bool,
    access_log_format: str,
    log_level: str,
    events_stdout: bool,
    dev_mode: bool,
    on_startup_failure: str,
    keepalive_timeout: float,
    head_timeout: float,
    startup_time_limit: float,
    max_requests: int,
    memory_limit: str,
    ping_interval: float,
    ping_response_time: float,
    shutdown_time_limit: float,
    request_timeout: float,
    request_timeout_action: str,
    idle_timeout: float,
    backlog: int,
    queue_length: int,
) -> None:
    """Serve one app (MODULE:ATTR, WSGI or ASGI) from one always-running pool."""
    from poolwarden.master.server import Master

    configure_logging(log_level)
    server = ServerSettings(
        binds=list(binds) or ["127.0.0.1:8000"],
        state_dir=state_dir,
        head_limits=HeadLimits(head_timeout=head_timeout),
        backlog=backlog,
        on_startup_failure=on_startup_failure,  # type: ignore[arg-type]
        log_level=log_level,
        events_stdout=events_stdout,
        dev_mode=dev_mode,
    )
    pool = PoolSettings(
        name="default",
        app=app,
        factory=factory,
        interface=interface,  # type: ignore[arg-type]
        processes=processes,
        threads=threads,
        max_concurrency=max_concurrency,
        queue_length=queue_length,
        keepalive_timeout=keepalive_timeout,
        shutdown_time_limit=shutdown_time_limit,
        startup_time_limit=startup_time_limit,
        recycle_requests=max_requests,
        recycle_memory=_size_option("--memory-limit", memory_limit),
        pinging_enabled=ping_interval > 0,
        ping_interval=ping_interval,
        ping_response_time=ping_response_time,
        access_log=access_log,
        access_log_format=access_log_format,  # type: ignore[arg-type]
        request_timeout=request_timeout,
        request_timeout_action=request_timeout_action,  # type: ignore[arg-type]
        idle_timeout=idle_timeout,
        # Idle shutdown is an on-demand pool's: the next request starts a worker.
        start_mode="on_demand" if idle_timeout > 0 else "always_running",
    )
    sys.exit(Master(server, [pool]).run())


@click.command("serve")
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="POOLWARDEN_CONFIG",
    required=True,
    type=click.Path(dir_okay=False),
    help="The configuration file (TOML); also $POOLWARDEN_CONFIG.",
)
@click.option(
    "--state-dir",
    default=None,
    help="Overrides the file's server.state_dir.",
)
@click.option(
    "--log-level", type=click.Choice(LOG_LEVELS), default=None, help="Overrides server.log_level."
)
@click.option(
    "--events-stdout",
    is_flag=True,
    help="Also write every event as a JSON line to stdout (for log shippers).",
)
def serve(
    config_path: str, state_dir: str | None, log_level: str | None, events_stdout: bool
) -> None:
    """Serve the sites and pools of a configuration file."""
    import msgspec

    from poolwarden.config import ConfigError, format_issues, load_config
    from poolwarden.master.server import Master

    try:
        config = load_config(config_path)
    except ConfigError as error:
        click.echo(f"poolwarden: {config_path} is not a valid configuration:", err=True)
        click.echo(format_issues(error.errors), err=True)
        sys.exit(1)
    server = config.server_settings()
    if state_dir is not None:
        server = msgspec.structs.replace(server, state_dir=state_dir)
    if log_level is not None:
        server = msgspec.structs.replace(server, log_level=log_level)
    if events_stdout:
        server = msgspec.structs.replace(server, events_stdout=True)
    configure_logging(server.log_level)
    for warning in config.warnings:
        logging.getLogger("poolwarden").warning("%s: %s", warning.path, warning.message)
    pools = [config.pool_settings(name) for name in config.pools]
    master = Master(server, pools, config=config, config_path=os.path.abspath(config_path))
    sys.exit(master.run())


COMMANDS: list[click.Command] = [run, serve]


def register(main: click.Group) -> None:
    """Add `poolwarden run` and `poolwarden serve` to `main`; a name already
    taken is a ValueError."""
    add_commands(main, COMMANDS)
