"""The import rules between poolwarden's layers, checked on the source with `ast`.

The layers, each importing only from the layers below it::

    poolwarden.__main__ ──▶ poolwarden.cli          the command line; the only importer
                              │                     of click and rich
                              │ __init__ assembles serve, admin, events, dumps, debug;
                              │ they import cli.common (and their own helper modules:
                              │ admin_format, config_toml, py_spy), never each other
                              ▼
    clients                 control_client (─▶ master.control, for the socket's name)
                            debug_client   (─▶ worker.debugger, for pdb's prompts)
                              ▼
    processes               poolwarden.master        poolwarden.worker
                            (the two never import each other: a worker is a fresh
                            interpreter, `python -m poolwarden.worker`, and they talk
                            over the channel)
                              ▼
    foundations             everything else: config, settings, routing, bind_address,
                            http, activation (pure policy), events, channel, importer,
                            stacks, stack_envelope, scoreboard, signals, units,
                            unix_paths, and the package itself; shared by both
                            processes and the CLI, so they import none of the above

And one rule across all of them: a private name (`_x`) is private to the
module or package that defines it; no other module imports it (or reaches
it as `module._x`).

`check(root)` returns every violation under `root/poolwarden` as
`file:line: module imports target: rule`; the real tree must have none, and
a synthetic tree that breaks each rule must have each reported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "poolwarden"

CLI = "poolwarden.cli"
ENTRY_POINT = "poolwarden.__main__"
"""`python -m poolwarden`: runs `poolwarden.cli.main`, as the console script does."""
CLI_COMMAND_MODULES = (
    "poolwarden.cli.serve",
    "poolwarden.cli.admin",
    "poolwarden.cli.events",
    "poolwarden.cli.dumps",
    "poolwarden.cli.debug",
)
"""The command groups: only `poolwarden.cli` itself imports them."""
MASTER = "poolwarden.master"
WORKER = "poolwarden.worker"
CLIENTS = ("poolwarden.control_client", "poolwarden.debug_client")
CLI_ONLY_LIBRARIES = ("click", "rich")
NOT_FOR_WORKERS = (MASTER, "poolwarden.control_client", CLI)
NOT_FOR_MASTER = (WORKER, CLI)
NOT_FOR_FOUNDATIONS = (MASTER, WORKER, CLI, *CLIENTS)


@dataclass(frozen=True)
class Import:
    """One name a module imports (or, for `module._x`, reaches into)."""

    file: Path
    line: int
    module: str
    """The importing module."""
    target: str
    """What it imports, resolved and dotted: `poolwarden.master.binding.parse_bind`
    for `from ..master.binding import parse_bind`, `click` for `import click`."""


@dataclass(frozen=True)
class Violation:
    file: Path
    line: int
    module: str
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.module} imports {self.target}: {self.rule}"


def within(name: str, *prefixes: str) -> bool:
    """Whether dotted `name` is one of `prefixes` or inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, file: Path) -> Iterator[Import]:
    """Every import in `file`, at any depth (functions, `if TYPE_CHECKING:`),
    relative ones resolved, and each `alias._x` of a name bound by an import."""
    module = module_name(root, file)
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(file, node.lineno, module, alias.name)
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}" if alias.name != "*" else base
                yield Import(file, node.lineno, module, target)
                bound[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and within(bound[node.value.id], PACKAGE)
            and is_private(node.attr)
        ):
            yield Import(file, node.lineno, module, f"{bound[node.value.id]}.{node.attr}")


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_owner(target: str) -> str | None:
    """The module or package a private name in `target` belongs to, if any:
    `poolwarden.cli.events` for `poolwarden.cli.events._location`."""
    parts = target.split(".")
    for index, part in enumerate(parts[1:], start=1):
        if is_private(part):
            return ".".join(parts[:index])
    return None


def rules_broken(found: Import) -> Iterator[str]:
    module, target = found.module, found.target
    if within(target, *CLI_ONLY_LIBRARIES) and not within(module, CLI):
        yield "click and rich are for the command line only (poolwarden.cli)"
    if not within(target, PACKAGE):
        return
    if within(target, CLI) and not within(module, CLI, ENTRY_POINT):
        yield "only the command line (and python -m poolwarden) imports poolwarden.cli"
    if within(module, CLI) and module != CLI:
        for command_module in CLI_COMMAND_MODULES:
            if within(target, command_module) and not within(module, command_module):
                yield "the command modules import poolwarden.cli.common, never each other"
    if within(module, WORKER) and within(target, *NOT_FOR_WORKERS):
        yield "a worker imports neither the master, the control client nor the CLI"
    if within(module, MASTER) and within(target, *NOT_FOR_MASTER):
        yield "the master imports neither the worker nor the CLI"
    if is_foundation(module) and within(target, *NOT_FOR_FOUNDATIONS):
        yield "a lower layer imports nothing from the master, the workers, the clients or the CLI"
    owner = private_owner(target)
    if owner is not None and not within(module, owner):
        yield f"a private name is {owner}'s own"


def is_foundation(module: str) -> bool:
    return within(module, PACKAGE) and not within(
        module, CLI, ENTRY_POINT, MASTER, WORKER, *CLIENTS
    )


def check(root: Path) -> list[Violation]:
    """Every import rule broken under `root/poolwarden`, in file and line order."""
    violations = []
    for file in sorted((root / PACKAGE).rglob("*.py")):
        for found in imports_of(root, file):
            for rule in rules_broken(found):
                where = file.relative_to(root)
                violations.append(Violation(where, found.line, found.module, found.target, rule))
    return violations


# --- the real tree -------------------------------------------------------------------------


def test_the_source_keeps_the_import_rules() -> None:
    violations = check(SRC)
    assert not violations, "import rules broken:\n" + "\n".join(map(str, violations))


def test_the_checker_sees_the_whole_tree() -> None:
    """A checker that read nothing would pass: it must see the CLI's click
    imports, the master's imports of the foundations, and relative imports."""
    found = {
        (each.module, each.target)
        for file in (SRC / PACKAGE).rglob("*.py")
        for each in imports_of(SRC, file)
    }
    assert ("poolwarden.cli.admin", "click") in found
    assert ("poolwarden.master.binding", "poolwarden.bind_address.parse_bind") in found
    assert ("poolwarden.__main__", "poolwarden.cli.main") in found
    assert len({module for module, _ in found}) > 50


# --- the checker on a tree that breaks every rule ---------------------------------------------

BROKEN = {
    "__init__.py": "",
    "__main__.py": "from poolwarden.cli import main\n",
    "config.py": (
        "import click\n"  # 1: (a)
        "from poolwarden.master.binding import parse_bind\n"  # 2: (c)
        "from .cli import common\n"  # 3: (c), (d), relative
        "import poolwarden.worker.debugger\n"  # 4: (c), import x.y
    ),
    "units.py": "def _round() -> None: ...\ndef parse_size() -> None: ...\n",
    "control_client.py": "from poolwarden.master.control import socket_path\n",
    "master/__init__.py": "",
    "master/control.py": "socket_path = 1\n",
    "master/binding.py": (
        "from poolwarden.units import parse_size\n"  # fine
        "from poolwarden.units import _round\n"  # 2: (e)
        "from .. import units\n"
        "units._round()\n"  # 4: (e), through the module
        "from poolwarden.worker import wsgi\n"  # 5: master ↛ worker
        "def later() -> None:\n"
        "    from rich.table import Table\n"  # 7: (a), inside a function
    ),
    "worker/__init__.py": "",
    "worker/debugger.py": "",
    "worker/wsgi.py": (
        "import poolwarden.master.control\n"  # 1: (b)
        "from ..control_client import socket_path\n"  # 2: (b), relative
        "from poolwarden import cli\n"  # 3: (b), (d), from the package
        "from poolwarden import __version__, units\n"  # fine: a dunder is no private name
    ),
    "cli/__init__.py": "import click\nfrom . import admin, events\n",
    "cli/common.py": "import rich\ndef _helper() -> None: ...\n",
    "cli/admin.py": (
        "from poolwarden.cli.common import _helper\n"  # 1: (e)
        "from . import events\n"  # 2: command modules never import each other
        "from poolwarden.cli.events import show\n"  # 3: nor their names
        "import click\n"  # fine
    ),
    "cli/events.py": "import rich\nshow = 1\n",
}

EXPECTED = {
    ("config.py", 1, "click and rich"),
    ("config.py", 2, "a lower layer"),
    ("config.py", 3, "a lower layer"),
    ("config.py", 3, "only the command line"),
    ("config.py", 4, "a lower layer"),
    ("master/binding.py", 2, "private name is poolwarden.units's"),
    ("master/binding.py", 4, "private name is poolwarden.units's"),
    ("master/binding.py", 5, "the master imports neither"),
    ("master/binding.py", 7, "click and rich"),
    ("worker/wsgi.py", 1, "a worker imports neither"),
    ("worker/wsgi.py", 2, "a worker imports neither"),
    ("worker/wsgi.py", 3, "a worker imports neither"),
    ("worker/wsgi.py", 3, "only the command line"),
    ("cli/admin.py", 1, "private name is poolwarden.cli.common's"),
    ("cli/admin.py", 2, "never each other"),
    ("cli/admin.py", 3, "never each other"),
}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_reports_each_broken_rule_with_file_and_line(tmp_path: Path) -> None:
    write_tree(tmp_path, BROKEN)
    violations = check(tmp_path)
    reported = [(v.file.relative_to(PACKAGE).as_posix(), v.line, v.rule) for v in violations]
    for file, line, rule in EXPECTED:
        assert any(
            (file, line) == (got_file, got_line) and rule in got_rule
            for got_file, got_line, got_rule in reported
        ), f"{file}:{line} ({rule}) not reported; reported:\n" + "\n".join(map(str, violations))
    assert len(violations) == len(EXPECTED), "\n".join(map(str, violations))
    assert str(violations[0]) == (
        f"{Path(PACKAGE, 'cli', 'admin.py')}:1: poolwarden.cli.admin imports "
        "poolwarden.cli.common._helper: a private name is poolwarden.cli.common's own"
    )


def test_the_checker_passes_a_tree_that_keeps_the_rules(tmp_path: Path) -> None:
    kept = {
        name: text
        for name, text in BROKEN.items()
        if not any(file == name for file, _, _ in EXPECTED)
    }
    write_tree(tmp_path, kept)
    assert check(tmp_path) == []
