"""`load_app` and `detect_interface`, in this process, against real modules.

The broken modules live in tests/apps/broken_*.py; the detection targets and
factories are in this module, which `load_app` can import by its dotted name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from poolwarden.channel import StartupFailure
from poolwarden.importer import AppLoadError, describe_failure, detect_interface, load_app

APPS_DIR = Path(__file__).parent / "apps"
HERE = __name__


def line_in(path: Path, text: str) -> int:
    lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    assert len(lines) == 1, (path, text, lines)
    return lines[0]


def failure_of(spec: str, *, factory: bool = False) -> StartupFailure:
    with pytest.raises(AppLoadError) as caught:
        load_app(spec, factory=factory)
    assert str(caught.value) == caught.value.failure.headline()
    return caught.value.failure


# targets for load_app and detect_interface


def wsgi_function(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


async def asgi_function(scope: dict[str, Any], receive: Any, send: Any) -> None:
    pass


def sync_three_arguments(scope: dict[str, Any], receive: Any, send: Any) -> Any:
    return asgi_function(scope, receive, send)


class AsyncCallable:
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        pass


class SyncWSGICallable:
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return wsgi_function(environ, start_response)


class WSGIClass:
    """PEP 3333 allows a class as the app: calling it returns the iterable."""

    def __init__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> None:
        self.body = wsgi_function(environ, start_response)

    def __iter__(self) -> Any:
        return iter(self.body)


class Holder:
    app = staticmethod(wsgi_function)
    number = 42


def create_wsgi_app() -> Any:
    return wsgi_function


def create_asgi_app() -> Any:
    return AsyncCallable()


def create_nothing() -> Any:
    return None


NOT_CALLABLE = {"an": "app"}


# load_app: what loads


def test_load_app_returns_the_attribute() -> None:
    assert load_app(f"{HERE}:wsgi_function") is wsgi_function
    assert load_app(f"{HERE}:Holder.app") is wsgi_function


def test_load_app_calls_a_factory() -> None:
    assert load_app(f"{HERE}:create_wsgi_app", factory=True) is wsgi_function
    assert isinstance(load_app(f"{HERE}:create_asgi_app", factory=True), AsyncCallable)


# load_app: the phases of failure


@pytest.mark.parametrize("spec", ["no_colon", ":app", "module:"])
def test_spec_phase(spec: str) -> None:
    failure = failure_of(spec)
    assert (failure.phase, failure.exception_type) == ("spec", "ValueError")
    assert failure.message == f"app {spec!r} is not of the form MODULE:ATTRIBUTE"
    assert failure.headline() == (
        f"cannot start app {spec!r} (spec failed): ValueError: "
        f"app {spec!r} is not of the form MODULE:ATTRIBUTE"
    )


def test_import_phase_missing_module() -> None:
    failure = failure_of("tests.apps.no_such_module:app")
    assert (failure.phase, failure.exception_type) == ("import", "ModuleNotFoundError")
    assert failure.module == "tests.apps.no_such_module"
    assert failure.lineno is None
    assert failure.message == (
        "no module named 'tests.apps.no_such_module' (is the working directory right?)"
    )


def test_import_phase_missing_package_of_the_module() -> None:
    failure = failure_of("no_such_package.app:app")
    assert (failure.phase, failure.module) == ("import", "no_such_package.app")
    assert failure.message == "no module named 'no_such_package' (is the working directory right?)"


def test_import_phase_exception_in_the_module() -> None:
    failure = failure_of("tests.apps.broken_import:app")
    path = APPS_DIR / "broken_import.py"
    raise_line = line_in(path, "raise KeyError")
    assert (failure.phase, failure.exception_type) == ("import", "KeyError")
    assert failure.message == "'DATABASE_URL is not set'"
    assert (failure.module, failure.lineno) == ("tests.apps.broken_import", raise_line)
    assert [(f.filename, f.lineno, f.name) for f in failure.frames] == [
        (str(path), line_in(path, "check_settings(SETTINGS)"), "<module>"),
        (str(path), raise_line, "check_settings"),
    ]
    assert failure.frames[-1].line == 'raise KeyError("DATABASE_URL is not set")'
    assert failure.traceback.startswith("Traceback (most recent call last):\n")
    assert failure.traceback.endswith("KeyError: 'DATABASE_URL is not set'\n")
    assert "importlib" not in failure.traceback
    assert "poolwarden" not in failure.traceback


def test_import_phase_points_at_the_innermost_app_module() -> None:
    failure = failure_of("tests.apps.broken_nested:app")
    helper = APPS_DIR / "broken_helper.py"
    assert (failure.exception_type, failure.message) == ("RuntimeError", "the helper exploded")
    assert (failure.module, failure.lineno) == (
        "tests.apps.broken_helper",
        line_in(helper, "raise"),
    )
    assert [f.name for f in failure.frames] == ["<module>", "explode"]


def test_import_phase_skips_library_frames_for_the_location() -> None:
    failure = failure_of("tests.apps.broken_config:app")
    path = APPS_DIR / "broken_config.py"
    assert failure.exception_type == "JSONDecodeError"
    assert (failure.module, failure.lineno) == (
        "tests.apps.broken_config",
        line_in(path, "json.loads("),
    )
    # The library's frames stay in the traceback; only the location skips them.
    assert failure.frames[-1].filename.endswith("json/decoder.py")


def test_import_phase_missing_dependency_of_the_app() -> None:
    failure = failure_of("tests.apps.broken_dependency:app")
    path = APPS_DIR / "broken_dependency.py"
    assert (failure.phase, failure.exception_type) == ("import", "ModuleNotFoundError")
    assert failure.message == "No module named 'poolwarden_test_dependency_that_is_not_installed'"
    assert (failure.module, failure.lineno) == (
        "tests.apps.broken_dependency",
        line_in(path, "import poolwarden_test"),
    )


def test_import_phase_syntax_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "syntax_broken_app.py").write_text("x = 1\n\ndef app(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    failure = failure_of("syntax_broken_app:app")
    assert (failure.phase, failure.exception_type) == ("import", "SyntaxError")
    assert (failure.module, failure.lineno) == ("syntax_broken_app", 3)
    assert failure.frames[-1].line == "def app(:"


def test_attribute_phase() -> None:
    failure = failure_of("tests.apps.asgi_apps:no_such_app")
    assert (failure.phase, failure.exception_type) == ("attribute", "AttributeError")
    assert (failure.module, failure.lineno) == ("tests.apps.asgi_apps", None)
    assert failure.message == "module 'tests.apps.asgi_apps' has no attribute 'no_such_app'"


def test_attribute_phase_dotted_names_what_lacks_it() -> None:
    failure = failure_of(f"{HERE}:Holder.missing")
    assert failure.message == f"{HERE}:Holder (a type) has no attribute 'missing'"
    failure = failure_of(f"{HERE}:Missing.app")
    assert failure.message == f"module {HERE!r} has no attribute 'Missing'"


def test_attribute_phase_not_callable() -> None:
    failure = failure_of(f"{HERE}:Holder.number")
    assert (failure.phase, failure.message) == (
        "attribute",
        "'Holder.number' is a int, not a callable app",
    )


def test_factory_phase_exception() -> None:
    failure = failure_of("tests.apps.broken_factory:create_app", factory=True)
    path = APPS_DIR / "broken_factory.py"
    assert (failure.phase, failure.exception_type) == ("factory", "ValueError")
    assert failure.message == "config file app.toml has no [server] table"
    assert (failure.module, failure.lineno) == (
        "tests.apps.broken_factory",
        line_in(path, "raise ValueError"),
    )
    assert [f.name for f in failure.frames] == ["create_app", "load_config"]
    assert "poolwarden" not in failure.traceback


def test_factory_phase_returns_no_app() -> None:
    failure = failure_of(f"{HERE}:create_nothing", factory=True)
    assert failure.phase == "factory"
    assert failure.message == "factory 'create_nothing' returned a NoneType, not a callable app"


def test_factory_phase_not_callable() -> None:
    failure = failure_of(f"{HERE}:NOT_CALLABLE", factory=True)
    assert (failure.phase, failure.message) == ("factory", "factory 'NOT_CALLABLE' is not callable")


def test_describe_failure_of_an_exception_raised_here() -> None:
    def startup() -> None:
        raise OSError("port is busy")

    try:
        startup()
    except OSError as error:
        failure = describe_failure("lifespan", "mod:app", error)
    assert (failure.module, failure.lineno) == (HERE, startup.__code__.co_firstlineno + 1)
    assert failure.headline() == (
        f"cannot start app 'mod:app' (lifespan failed in {HERE}, line {failure.lineno}): "
        "OSError: port is busy"
    )


# detect_interface


@pytest.mark.parametrize(
    ("app", "interface"),
    [
        (wsgi_function, "wsgi"),
        (asgi_function, "asgi"),
        (AsyncCallable(), "asgi"),
        (SyncWSGICallable(), "wsgi"),
        (sync_three_arguments, "asgi"),
        (WSGIClass, "wsgi"),
        (functools.partial(asgi_function), "asgi"),
        (AsyncCallable().__call__, "asgi"),
        (SyncWSGICallable().__call__, "wsgi"),
        (lambda environ, start_response: [], "wsgi"),
        (len, "wsgi"),
    ],
    ids=[
        "wsgi-function",
        "async-function",
        "instance-async-call",
        "instance-sync-2-arg-call",
        "sync-3-arg-function",
        "wsgi-class",
        "partial-of-async",
        "bound-async-method",
        "bound-sync-method",
        "lambda-2-arg",
        "builtin-without-signature",
    ],
)
def test_detect_interface(app: Any, interface: str) -> None:
    assert detect_interface(app) == interface
