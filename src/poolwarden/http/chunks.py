"""The chunk-size line of a chunked body (RFC 9112 §7.1.1).

```
chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
chunk-ext-val = token / quoted-string
```

llhttp refuses the whitespace (BWS) the grammar allows around `;` and `=`
(`5; name=value`), which clients do send. poolwarden recognises no chunk
extension, and a recipient must ignore those it does not recognise, so a
line that matches the grammar is given to llhttp as its size alone.
Anything else on the line (a bare CR, a space inside a name, an unclosed
quote) is malformed: the request is refused, never guessed at, because a
chunk line two parsers read differently is how a body smuggles a request.
"""

from __future__ import annotations

import re

from poolwarden.http.fields import TOKEN

_BWS = rb"[ \t]*"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_EXTENSION = (
    _BWS
    + rb";"
    + _BWS
    + TOKEN
    + rb"(?:"
    + _BWS
    + rb"="
    + _BWS
    + rb"(?:"
    + TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?"
)
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:" + _EXTENSION + rb")*")


def chunk_size(line: bytes) -> bytes | None:
    """The hex digits of a chunk-size line (without its CRLF); None if malformed."""
    match = _CHUNK_LINE.fullmatch(line)
    return None if match is None else match.group(1)
