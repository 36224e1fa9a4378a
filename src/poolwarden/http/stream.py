"""A worker connection's request bytes, given to llhttp a piece at a time.

```
 socket ─▶ RequestStream.feed ─▶ llhttp (httptools) ─▶ the worker's callbacks
              │  a request line's extension method ─▶ a stand-in llhttp knows
              │  a chunk-size line ─▶ its size alone
              └─◀ head_complete(chunked, length), from on_headers_complete
```

Two things RFC 9110/9112 allow and llhttp refuses need bytes changed before
llhttp sees them: an extension method (`http/methods.py`) and whitespace
in a chunk extension (`http/chunks.py`). So the stream keeps track of where
each request's method, head and body are: it reads the method itself; it
stops llhttp at the end of each head (its first CRLF CRLF: llhttp, strict,
ends a head nowhere else and refuses bare LFs); the worker tells it, from
`on_headers_complete`, how the body is framed, which llhttp has judged by
then; and it counts the body through. llhttp still judges every byte it is
given, in as few pieces as that allows: the common read (a head, or a head
and its body) is one or two calls of it. Between requests, empty lines are
dropped, as llhttp would drop them.

Once llhttp raises (a refused request, or an Upgrade), the stream stops
judging and gives llhttp everything as it comes.
"""

from __future__ import annotations

import httptools

from poolwarden.http.chunks import chunk_size
from poolwarden.http.fields import is_token
from poolwarden.http.methods import LLHTTP_METHODS, LONGEST_METHOD, stand_in_method

_HEAD_END = b"\r\n\r\n"
_METHOD_END = LONGEST_METHOD + 1
"""Where the space after a method is looked for, at most."""

# Where the next byte belongs.
_START = 0  # a request's first line (or the empty lines before it)
_HEAD = 1  # the rest of a head, up to its empty line
_BODY = 2  # a Content-Length body: `_left` bytes to go
_CHUNK_LINE = 3  # a chunk-size line (one split across reads is kept in `_line`)
_CHUNK_DATA = 4  # a chunk's data and its CRLF: `_left` bytes to go
_TRAILERS = 5  # the trailer section after the last chunk, up to its empty line
_PASS = 6  # llhttp raised: everything goes to it as is

_COMMON_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
"""Methods llhttp knows, recognised without a lookup (a subset of
`LLHTTP_METHODS`)."""

_COPY_BELOW = 4096
"""Runs shorter than this are copied for llhttp, longer ones given as a
memoryview, which costs more to make than a short copy."""


class ChunkLineError(httptools.HttpParserError):
    """A chunk-size line that breaks RFC 9112 §7.1.1: the request is refused.

    An `HttpParserError`, like llhttp's own refusals, so that a worker
    answers it as it answers them: 400, and the connection closes.
    """


class RequestStream:
    """Feeds one connection's bytes to `parser`, corrected where llhttp is stricter."""

    __slots__ = (
        "_feed",
        "_held",
        "_last",
        "_left",
        "_line",
        "_max_line",
        "_state",
        "_tail",
        "method",
        "upgraded",
    )

    def __init__(self, parser: httptools.HttpRequestParser, max_line: int) -> None:
        self._feed = parser.feed_data
        self._max_line = max_line
        """Longest chunk-size line held back, in bytes (the head limit, as a
        header line's)."""
        self._state = _START
        self._held = b""
        """The start of a request line whose method has not ended yet."""
        self._line = b""
        """The start of a chunk-size line that has not ended yet."""
        self._tail = b""
        """The last bytes of a head (or trailer section) walked so far, to
        find an empty line that arrives split across reads."""
        self._left = 0
        self._last: tuple[bytes, int] = (b"", 0)
        """The bytes llhttp was last given a piece of, and where that piece
        began in them: where an Upgrade's own bytes begin is told by llhttp
        as an offset in the piece."""
        self.upgraded = b""
        """After llhttp raised `HttpParserUpgrade`: the bytes of this read
        after the upgraded request, which belong to the new protocol."""
        self.method: bytes | None = None
        """The method of the request in llhttp's hands, when llhttp was given
        a stand-in for it; None when `get_method()` tells the truth."""

    @property
    def pending(self) -> bool:
        """Whether the start of a request is held back (its method is not
        complete yet): a request has begun, though llhttp has not seen it."""
        return bool(self._held)

    def head_complete(self, chunked: bool, length: int) -> None:
        """How the body of the head llhttp just completed is framed.

        Call from `on_headers_complete`, once the head is accepted:
        `chunked` when it has Transfer-Encoding (llhttp accepts it only with
        chunked last), else its Content-Length (0 without one).
        """
        if chunked:
            self._state = _CHUNK_LINE
        elif length > 0:
            self._state = _BODY
            self._left = length
        else:
            self._state = _START

    def feed(self, data: bytes) -> None:
        """Give `data` to llhttp; what llhttp raises is raised from here.

        Raises `ChunkLineError` for a malformed chunk-size line.
        """
        state = self._state
        try:
            if state == _START and not self._held and data.startswith(_COMMON_METHODS):
                # The common read: a head of a common method, and perhaps
                # its body. No walk up to the head's end.
                at = data.find(_HEAD_END) + 4
                if at > 3:
                    self.method = None
                    self._state = _HEAD
                    self._last = (data, 0)
                    self._feed(data if at == len(data) else data[:at])
                    state = self._state
                    if state == _HEAD:
                        self._state = _PASS  # llhttp did not end the head there
                    rest = len(data) - at
                    if rest and state == _BODY and rest <= self._left:
                        self._left -= rest  # all of it body
                        if not self._left:
                            self._state = _START
                        self._give(data, at, len(data))
                    elif rest:
                        self._walk(data, at)
                    return
            elif state == _PASS:
                self._last = (data, 0)
                self._feed(data)
                return
            self._walk(data, 0)
        except httptools.HttpParserUpgrade as upgrade:
            source, began = self._last
            self.upgraded = source[began + upgrade.args[0] :]
            self._state = _PASS
            raise
        except BaseException:
            self._state = _PASS
            raise

    def _walk(self, data: bytes, at: int) -> None:
        """Walk `data` from `at`, giving llhttp each run of it that needs no change.

        llhttp is fed only where bytes are replaced, and at the end of each
        head, where the stream must learn from llhttp how the body is
        framed; a body goes to llhttp with the next head or at the end.
        """
        end = len(data)
        start = at  # the first byte llhttp has not been given
        while at < end:
            state = self._state
            if state == _START:
                if self._held:  # only ever at the start of a read
                    data = self._held + data
                    self._held = b""
                    end = len(data)
                space = data.find(b" ", at, at + _METHOD_END)
                if space > at and data[at:space] in LLHTTP_METHODS:
                    self.method = None
                    self._state = state = _HEAD
                else:
                    self._give(data, start, at)
                    start = at = self._request_line(data, at, end)
                    if at < 0:
                        return
                    state = _HEAD
            if state in (_HEAD, _TRAILERS):
                stop = self._empty_line_end(data, at)
                if stop < 0:
                    self._tail = data[end - 3 :] if end - at >= 3 else (self._tail + data[at:])[-3:]
                    break
                self._tail = b""
                at = stop
                if state == _TRAILERS:
                    self._state = _START
                    continue
                self._give(data, start, at)  # llhttp calls on_headers_complete
                start = at
                if self._state == _HEAD:
                    # llhttp did not end the head where it should have: it
                    # frames the rest itself, uncorrected.
                    self._state = _PASS
                    break
            elif state in (_BODY, _CHUNK_DATA):
                take = min(self._left, end - at)
                at += take
                self._left -= take
                if self._left == 0:
                    self._state = _START if state == _BODY else _CHUNK_LINE
            elif state == _CHUNK_LINE:
                newline = data.find(b"\n", at)
                if newline < 0:
                    self._give(data, start, at)
                    self._line += data[at:]
                    if len(self._line) > self._max_line:
                        raise ChunkLineError("chunk-size line longer than the limit")
                    return
                held = self._line
                line = held + data[at:newline] if held else data[at:newline]
                self._line = b""
                replaced = self._chunk_line(line)
                if held or replaced is not None:
                    # Extensions, or a line partly held back: llhttp gets
                    # the line without them, in one piece.
                    self._give(data, start, at)
                    self._feed(line + b"\n" if replaced is None else replaced)
                    start = newline + 1
                at = newline + 1
            else:
                break
        self._give(data, start, end)

    def _give(self, data: bytes, start: int, stop: int) -> None:
        """Feed llhttp `data[start:stop]`, without copying a long run."""
        if stop > start:
            self._last = (data, start)
            if start == 0 and stop == len(data):
                self._feed(data)
            elif stop - start < _COPY_BELOW:
                self._feed(data[start:stop])
            else:
                self._feed(memoryview(data)[start:stop])

    def _request_line(self, data: bytes, at: int, end: int) -> int:
        """Start a request at `data[at:]`: where its head goes on, or -1 to wait."""
        while data[at] in b"\r\n":  # an empty line
            at += 1
            if at == end:
                return -1
        space = data.find(b" ", at, at + _METHOD_END)
        if space < 0:
            if end - at <= LONGEST_METHOD and is_token(data[at:end]):
                self._held = data[at:end]  # the method goes on in the next read
                return -1
            stand_in = None  # malformed: llhttp refuses it
        else:
            stand_in = stand_in_method(data[at:space])
        if stand_in is None:
            self.method = None
        else:
            self.method = data[at:space]
            self._feed(stand_in)
            at = space
        self._state = _HEAD
        return at

    def _chunk_line(self, line: bytes) -> bytes | None:
        """Judge the chunk-size line `line` (up to its LF) and set what follows.

        Returns the line to give llhttp in its place (its size and CRLF),
        or None to give it as it is: a line without extensions goes to
        llhttp unchanged, and llhttp judges its digits.
        """
        if line[-1:] != b"\r":
            raise ChunkLineError("chunk-size line ends in a bare LF")
        replaced = None
        if b";" in line:
            digits = chunk_size(line[:-1])
            if digits is None:
                raise ChunkLineError("malformed chunk-size line")
            replaced = digits + b"\r\n"
        else:
            digits = line[:-1]
        try:
            size = int(digits, 16)
        except ValueError:
            raise ChunkLineError("malformed chunk-size line") from None
        if size:
            self._state = _CHUNK_DATA
            self._left = size + 2  # and the CRLF after the data, which llhttp checks
        else:
            self._state = _TRAILERS
            self._tail = b"\r\n"  # the last chunk's line ended; an empty line ends all
        return replaced

    def _empty_line_end(self, data: bytes, at: int) -> int:
        """Index in `data` just past the CRLF CRLF that ends a head whose
        last bytes walked so far are `_tail`, or -1."""
        tail = self._tail
        if tail:
            found = (tail + data[at : at + 3]).find(_HEAD_END)
            if found >= 0:
                return at + found + 4 - len(tail)
        found = data.find(_HEAD_END, at)
        return -1 if found < 0 else found + 4
