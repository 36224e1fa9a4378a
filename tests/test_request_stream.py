"""The request stream between a worker's socket and llhttp, without processes.

A `Recorder` plays the worker: httptools callbacks that note what llhttp
reported and tell the stream how each body is framed, as the workers'
`on_headers_complete` does. However the bytes are cut into reads, the same
requests must come out.
"""

from __future__ import annotations

import itertools

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden.http.rules import request_parser
from poolwarden.http.stream import ChunkLineError, RequestStream

Event = tuple[object, ...]


class Recorder:
    """httptools callbacks recording heads, bodies and ends, in order."""

    def __init__(self, max_line: int = 1000) -> None:
        self.parser = request_parser(self)
        self.stream = RequestStream(self.parser, max_line)
        self.events: list[Event] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = False

    def feed(self, *reads: bytes) -> list[Event]:
        for data in reads:
            self.stream.feed(data)
        return self.events

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:
            self.headers.append((name.lower(), value))
        else:
            self.events.append(("trailer", name.lower(), value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        method = self.stream.method or self.parser.get_method()
        fields = dict(self.headers)
        self.events.append(("head", method, self.url))
        self.stream.head_complete(
            b"transfer-encoding" in fields, int(fields.get(b"content-length", b"0"))
        )

    def on_body(self, body: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + body)  # type: ignore[operator]
        else:
            self.events.append(("body", body))

    def on_message_complete(self) -> None:
        self.events.append(("end",))


STREAM = b"".join(
    [
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\n",  # an empty line between requests
        b"FOO /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5; some; parameters=stuff\r\nhello\r\n",
        b'6 ;q = "a \\" b"\t;x\r\n world\r\n',
        b"0 ; last\r\nX-T: 1\r\n\r\n",
        b"PROPFIND /d HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"BREW /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /f HTTP/1.1\r\nHost: h\r\n\r\n",
    ]
)

EXPECTED: list[Event] = [
    ("head", b"GET", b"/a"),
    ("end",),
    ("head", b"FOO", b"/b"),
    ("body", b"hello"),
    ("end",),
    ("head", b"POST", b"/c"),
    ("body", b"hello world"),
    ("trailer", b"x-t", b"1"),
    ("end",),
    ("head", b"PROPFIND", b"/d"),
    ("end",),
    ("head", b"BREW", b"/e"),
    ("body", b"abc"),
    ("end",),
    ("head", b"GET", b"/f"),
    ("end",),
]


def test_a_pipelined_stream_in_one_read() -> None:
    assert Recorder().feed(STREAM) == EXPECTED


def test_every_cut_into_two_reads_gives_the_same_requests() -> None:
    for cut in range(1, len(STREAM)):
        assert Recorder().feed(STREAM[:cut], STREAM[cut:]) == EXPECTED, cut


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_cut_into_reads_gives_the_same_requests(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    reads = [STREAM[start:stop] for start, stop in itertools.pairwise(points)]
    assert Recorder().feed(*reads) == EXPECTED


def test_byte_by_byte() -> None:
    recorder = Recorder()
    for index in range(len(STREAM)):
        recorder.stream.feed(STREAM[index : index + 1])
    assert recorder.events == EXPECTED


def test_what_llhttp_accepts_alone_reaches_it_unchanged() -> None:
    """Without an extension method or chunk extension, the stream changes nothing."""
    plain = (
        b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;a=b\r\nhello\r\n0\r\n\r\n"
        b"PUT /q HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    )
    direct = Recorder()
    direct.parser.feed_data(plain)
    assert Recorder().feed(plain) == direct.events


def test_an_unfinished_method_is_held_until_it_ends() -> None:
    recorder = Recorder()
    recorder.feed(b"BR")
    assert recorder.stream.pending and recorder.events == []
    recorder.feed(b"EW /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert not recorder.stream.pending
    assert recorder.events == [("head", b"BREW", b"/x"), ("end",)]


@pytest.mark.parametrize(
    "start",
    [b"G@T /x HTTP/1.1\r\n", b"GET\r\n\r\n", b"A" * 65 + b" /x HTTP/1.1\r\n"],
    ids=["not_a_token", "no_target", "too_long"],
)
def test_a_malformed_method_goes_to_llhttp_at_once(start: bytes) -> None:
    with pytest.raises(httptools.HttpParserError):
        Recorder().feed(start)


@pytest.mark.parametrize(
    "line",
    [
        b"5",
        b"5;a",
        b"5;a=b",
        b"5 ;a",
        b"5; a",
        b"5\t;\ta\t=\tb",
        b"5;a=b;c;d=e",
        b'5;a="quoted; \\"string\\""',
        b"0005",
        b'5;a="caf\xc3\xa9"',
    ],
)
def test_chunk_extensions_the_grammar_allows_are_ignored(line: bytes) -> None:
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = Recorder().feed(head + line + b"\r\nhello\r\n0\r\n\r\n")
    assert events == [("head", b"POST", b"/"), ("body", b"hello"), ("end",)]


@pytest.mark.parametrize(
    "line",
    [
        b"5 ",  # whitespace but no extension
        b"5;",  # no name
        b"5; a b",  # a space inside
        b"5;a=",  # no value
        b'5;a="open',  # an unclosed quote
        b"5;a=b c",
        b"5\r;a",  # a bare CR
        b"5;a\x00",
        b"x5",
        b";a",
    ],
)
def test_malformed_chunk_lines_are_refused(line: bytes) -> None:
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    recorder = Recorder()
    # Refused by the stream (ChunkLineError), or by llhttp when the line
    # has no extension and goes to it as it is.
    with pytest.raises(httptools.HttpParserError):
        recorder.feed(head + line + b"\r\nhello\r\n0\r\n\r\n")
    assert ("end",) not in recorder.events


def test_a_chunk_line_ending_in_a_bare_lf_is_refused() -> None:
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    with pytest.raises(ChunkLineError):
        Recorder().feed(head + b"5\nhello\r\n0\r\n\r\n")


def test_a_chunk_line_that_never_ends_is_bounded() -> None:
    recorder = Recorder(max_line=100)
    recorder.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a=")
    with pytest.raises(ChunkLineError, match="longer than the limit"):
        for _ in range(20):
            recorder.feed(b"b" * 10)


def test_after_llhttp_refuses_everything_goes_to_it_as_is() -> None:
    recorder = Recorder()
    with pytest.raises(httptools.HttpParserError):
        recorder.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n")
    with pytest.raises(httptools.HttpParserError):
        recorder.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")


def test_after_an_upgrade_the_bytes_go_to_llhttp_as_they_are() -> None:
    head = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    after = b"BREW /x HTTP/1.1\r\nHost: h\r\n\r\n"
    direct, recorder = Recorder(), Recorder()
    for feed in (direct.parser.feed_data, recorder.feed):
        with pytest.raises(httptools.HttpParserUpgrade):
            feed(head)
        with pytest.raises(httptools.HttpParserInvalidMethodError):
            feed(after)  # no stand-in any more: llhttp refuses what it refuses
    assert recorder.events == direct.events == [("head", b"GET", b"/ws"), ("end",)]


METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"PROPFIND", b"FOO", b"brew", b"X-Y"])
BWS = st.sampled_from([b"", b" ", b"\t", b" \t "])


@st.composite
def chunk_extensions(draw: st.DrawFn) -> bytes:
    extensions = b""
    for _ in range(draw(st.integers(0, 2))):
        extensions += draw(BWS) + b";" + draw(BWS) + b"ext"
        if draw(st.booleans()):
            value = draw(st.sampled_from([b"v", b'"q ; v"', b'"\\""']))
            extensions += draw(BWS) + b"=" + draw(BWS) + value
    return extensions


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """One well-formed request, and the events it must give."""
    method = draw(METHODS)
    target = b"/r%d" % draw(st.integers(0, 999))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    head = method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n"
    events: list[Event] = [("head", method, target)]
    if framing == "length":
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        data = head + body
    elif framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        cut = draw(st.integers(0, len(body)))
        pieces = [piece for piece in (body[:cut], body[cut:]) if piece]
        data = head + b"".join(
            b"%x%s\r\n%s\r\n" % (len(piece), draw(chunk_extensions()), piece) for piece in pieces
        )
        data += b"0" + draw(chunk_extensions()) + b"\r\n\r\n"
    else:
        data = head + b"\r\n"
        body = b""
    if body:
        events.append(("body", body))
    events.append(("end",))
    return data, events


@settings(max_examples=300, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=5), st.lists(st.integers(0, 2000), max_size=10))
def test_pipelined_requests_of_every_kind_cut_anywhere(
    pipeline: list[tuple[bytes, list[Event]]], cuts: list[int]
) -> None:
    stream = b"".join(data for data, _ in pipeline)
    points = [0, *sorted(cut for cut in cuts if cut < len(stream)), len(stream)]
    reads = [stream[start:stop] for start, stop in itertools.pairwise(points)]
    assert Recorder().feed(*reads) == [event for _, events in pipeline for event in events]
