"""Field names and values (RFC 9110 §5), in requests and in responses.

Both directions meet the same grammar: a field name is a token, a field value
has no leading or trailing whitespace. llhttp already refuses request names
that are not tokens and strips a value's leading whitespace, but keeps its
trailing whitespace; an app's response fields are checked here before they
are written.
"""

from __future__ import annotations

import re

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = rb"[" + _TCHAR + rb"]+"
"""RFC 9110 §5.6.2 `token`, as a regular expression over bytes."""

_TOKEN = re.compile(TOKEN)
_TOKEN_TEXT = re.compile(TOKEN.decode("ascii"))

OWS = b" \t"
"""RFC 9110 §5.6.3 optional whitespace: SP and HTAB."""

_KNOWN_NAMES: set[bytes | str] = set()
"""Response field names already found to be tokens (bounded): an app sends
the same few names on every response, so each is matched once."""
_KNOWN_NAMES_LIMIT = 1024


def is_token(text: bytes) -> bool:
    """Whether `text` is an RFC 9110 token (a method, a field name)."""
    return _TOKEN.fullmatch(text) is not None


def field_value(value: bytes) -> bytes:
    """A request field value without its trailing whitespace.

    RFC 9112 §5.1 and RFC 9110 §5.5: a recipient strips leading and trailing
    SP and HTAB from a field value. llhttp strips the leading whitespace but
    keeps the trailing, which would reach the app (`"value \\t"`). The
    workers call `value.rstrip(OWS)` in line, once per header field: it
    returns `value` itself when there is nothing to strip, and costs less
    than a call of this function.
    """
    return value.rstrip(OWS)


def valid_field_name(name: bytes | str) -> bool:
    """Whether an app's response field name is a token (RFC 9110 §5.1).

    A name with a space, a colon or a line break in it would be written
    as is and read by a client as something else: another field, or a
    malformed head.
    """
    if name in _KNOWN_NAMES:
        return True
    if isinstance(name, bytes):
        valid = _TOKEN.fullmatch(name) is not None
    else:
        valid = _TOKEN_TEXT.fullmatch(name) is not None
    if not valid:
        return False
    if len(_KNOWN_NAMES) < _KNOWN_NAMES_LIMIT:
        _KNOWN_NAMES.add(name)
    return True
