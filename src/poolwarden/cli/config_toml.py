"""`poolwarden config show`: the running configuration written back as TOML (pure).

The control API answers `GET /v1/config` with the configuration as JSON,
defaults filled in and paths absolute; this module writes it as a file that
`poolwarden config check` accepts again, so what runs can be saved and
edited. The standard library reads TOML but does not write it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def format_config_toml(document: Mapping[str, Any]) -> str:
    """The running config as TOML that `config check` accepts again.

    Durations are seconds and sizes bytes (the server's units); keys whose
    value is unset (null) are written as comments, since TOML has no null.
    """
    lines: list[str] = []
    _emit_table(lines, [], document, header=False)
    return "\n".join(lines).strip() + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_table(item) for item in value)


def _emit_table(lines: list[str], path: list[str], table: Mapping[str, Any], header: bool) -> None:
    own = [(key, value) for key, value in table.items() if not _is_nested(value)]
    if header and own:
        lines += ["", f"[{'.'.join(_toml_key(part) for part in path)}]"]
    for key, value in own:
        if value is None:
            lines.append(f"# {_toml_key(key)}: not set")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if _is_table(value):
            _emit_table(lines, [*path, key], value, header=True)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{'.'.join(_toml_key(part) for part in [*path, key])}]]"]
                _emit_table(lines, [*path, key], item, header=False)


def _is_nested(value: Any) -> bool:
    return _is_table(value) or _is_table_array(value)


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return _toml_string(key)


_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return _toml_string(str(value))
