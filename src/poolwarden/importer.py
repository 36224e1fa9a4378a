"""Loading the app named by `MODULE:ATTR`, and explaining why it would not load.

A failure becomes a `StartupFailure`: the phase (the spec itself, the import,
the attribute, the factory call), the exception, and the innermost frame of
the app's own code, so the headline points at the app's line rather than at
poolwarden's or importlib's.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import sysconfig
import traceback
from types import TracebackType
from typing import Any

from poolwarden.channel import Frame, StartupFailure

_POOLWARDEN_DIR = os.path.dirname(os.path.abspath(__file__))
_IMPORTLIB_INIT = importlib.__file__ or ""
_LIBRARY_DIRS = tuple(
    {
        os.path.abspath(path)
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    }
)


class AppLoadError(Exception):
    """The app could not be loaded; `failure` says why."""

    def __init__(self, failure: StartupFailure) -> None:
        super().__init__(failure.headline())
        self.failure = failure


def is_poolwarden_frame(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_POOLWARDEN_DIR + os.sep)


def is_machinery_frame(filename: str) -> bool:
    """A frame of poolwarden or of the import system: nothing the app can fix.

    Python's own tracebacks hide importlib's frames the same way.
    """
    return (
        filename.startswith("<frozen importlib")
        or filename == _IMPORTLIB_INIT
        or is_poolwarden_frame(filename)
    )


def is_app_frame(filename: str) -> bool:
    """A frame of the app's own code: not poolwarden, importlib or a library."""
    if filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    if path.startswith(_POOLWARDEN_DIR + os.sep):
        return False
    return not path.startswith(_LIBRARY_DIRS)


def module_name_for(filename: str) -> str:
    """The dotted module name a file would be imported as, from sys.path."""
    path = os.path.abspath(filename)
    best = ""
    for entry in sys.path:
        root = os.path.abspath(entry or os.getcwd())
        if path.startswith(root + os.sep) and len(root) > len(best):
            best = root
    relative = os.path.relpath(path, best) if best else os.path.basename(path)
    name = os.path.splitext(relative)[0].replace(os.sep, ".")
    return name.removesuffix(".__init__")


def describe_failure(phase: str, app: str, error: BaseException) -> StartupFailure:
    """Turn an exception raised while starting the app into data.

    Poolwarden's and importlib's frames are dropped from the traceback: an
    operator wants the app's frames, and the exception itself.
    """
    tb: TracebackType | None = error.__traceback__
    summary = [
        entry for entry in traceback.extract_tb(tb) if not is_machinery_frame(entry.filename)
    ]
    frames = [
        Frame(
            filename=entry.filename,
            lineno=entry.lineno or 0,
            name=entry.name,
            line=(entry.line or "").strip(),
        )
        for entry in summary
    ]
    if isinstance(error, SyntaxError) and error.filename:
        frames.append(
            Frame(
                filename=error.filename,
                lineno=error.lineno or 0,
                name="<module>",
                line=(error.text or "").strip(),
            )
        )
    module = lineno = None
    for frame in reversed(frames):
        if is_app_frame(frame.filename):
            module, lineno = module_name_for(frame.filename), frame.lineno
            break
    if module is None and isinstance(error, ModuleNotFoundError) and phase == "import":
        module = app.split(":", 1)[0]
    text = (
        "Traceback (most recent call last):\n"
        + "".join(traceback.format_list(summary))
        + "".join(traceback.format_exception_only(type(error), error))
    )
    return StartupFailure(
        phase=phase,
        app=app,
        exception_type=type(error).__qualname__,
        message=str(error),
        module=module,
        lineno=lineno,
        frames=frames,
        traceback=text,
    )


def _spec_failure(app: str, message: str, phase: str = "spec") -> AppLoadError:
    return AppLoadError(
        StartupFailure(phase=phase, app=app, exception_type="ValueError", message=message)
    )


def load_app(spec: str, *, factory: bool = False) -> Any:
    """Import `MODULE:ATTR` (ATTR may be dotted) and return the app object.

    With `factory`, the attribute is called without arguments and its result
    is the app, as with gunicorn's `module:create_app()` and uvicorn's
    `--factory`.
    """
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise _spec_failure(spec, f"app {spec!r} is not of the form MODULE:ATTRIBUTE")
    try:
        module = importlib.import_module(module_name)
    except BaseException as error:
        if (
            isinstance(error, ModuleNotFoundError)
            and error.name
            and (module_name == error.name or module_name.startswith(error.name + "."))
        ):
            raise AppLoadError(
                StartupFailure(
                    phase="import",
                    app=spec,
                    exception_type="ModuleNotFoundError",
                    message=f"no module named {error.name!r} (is the working directory right?)",
                    module=module_name,
                )
            ) from None
        raise AppLoadError(describe_failure("import", spec, error)) from None
    target: Any = module
    owner = f"module {module_name!r}"
    found = ""
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(
                StartupFailure(
                    phase="attribute",
                    app=spec,
                    exception_type="AttributeError",
                    message=f"{owner} has no attribute {part!r}",
                    module=module_name,
                )
            ) from None
        # The next miss names the object that lacks it, not the module.
        found = f"{found}.{part}" if found else part
        owner = f"{module_name}:{found} (a {type(target).__name__})"
    if factory:
        if not callable(target):
            raise _spec_failure(spec, f"factory {attr_path!r} is not callable", "factory")
        try:
            target = target()
        except BaseException as error:
            raise AppLoadError(describe_failure("factory", spec, error)) from None
        if not callable(target):
            raise _spec_failure(
                spec,
                f"factory {attr_path!r} returned a {type(target).__name__}, not a callable app",
                "factory",
            )
    if not callable(target):
        raise _spec_failure(
            spec, f"{attr_path!r} is a {type(target).__name__}, not a callable app", "attribute"
        )
    return target


def detect_interface(app: Any) -> str:
    """`asgi` or `wsgi`, from the app's call signature, as uvicorn and granian do.

    A coroutine function (or an object whose `__call__` is one) is ASGI; so is
    a plain callable of three parameters (scope, receive, send). Everything
    else is taken as WSGI (environ, start_response).
    """
    function: Any = app
    if inspect.isclass(app):
        function = app.__call__ if hasattr(app, "__await__") else app.__init__
    elif not (inspect.isfunction(app) or inspect.ismethod(app)):
        function = type(app).__call__
    if asyncio.iscoroutinefunction(function) or inspect.iscoroutinefunction(app):
        return "asgi"
    try:
        parameters = [
            parameter
            for parameter in inspect.signature(app).parameters.values()
            if parameter.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return "wsgi"
    return "asgi" if len(parameters) == 3 else "wsgi"
