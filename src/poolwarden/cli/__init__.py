"""The `poolwarden` command line: one click group, one module per command group.

    poolwarden (this module: the group, --version, -h)
      ├─ run, serve ................ serve.py     become the master
      ├─ pools, pool, wp, requests,
      │  stack, config, health ..... admin.py     a running server, over the control API
      ├─ events .................... events.py    the event log, read from the state directory
      ├─ dumps ..................... dumps.py     core files of crashed workers
      └─ debug ..................... debug.py     pdb/debugpy sessions with workers
                 every one of them ──▶ common.py  state directory, control API calls,
                                                  console, errors, tables

The command modules import `common` and never each other; only this module
knows them all. click and rich are imported under `poolwarden.cli` only:
the master and the workers never load them. The console script
(`poolwarden = "poolwarden.cli:main"`) and `python -m poolwarden` both run
`main`.
"""

from __future__ import annotations

import click

from poolwarden import __version__
from poolwarden.cli import admin, debug, dumps, events, serve

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poolwarden")
def main() -> None:
    """poolwarden: a Python application server with IIS's application pools."""


serve.register(main)
admin.register(main)
events.register(main)
dumps.register(main)
debug.register(main)
