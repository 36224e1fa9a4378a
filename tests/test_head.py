"""The front end's head parser, without processes: limits, grammar, smuggling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden.http.head import HeadError, check_incomplete, find_head_end, parse_head
from poolwarden.http.limits import HeadLimits

LIMITS = HeadLimits()


def parse(raw: bytes, limits: HeadLimits = LIMITS):
    end = find_head_end(raw)
    assert end > 0, "test head is incomplete"
    return parse_head(raw, end, limits)


def refused(raw: bytes, limits: HeadLimits = LIMITS) -> HeadError:
    with pytest.raises(HeadError) as caught:
        parse(raw, limits)
    return caught.value


def test_parses_origin_form_target() -> None:
    head = parse(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.test\r\nX-A: 1\r\n\r\n")
    assert head.method == "GET"
    assert head.path == b"/a/b"
    assert head.query == b"x=1&y=2"
    assert head.host == "example.test"
    assert head.http_version == "1.1"
    assert head.keep_alive is True
    assert head.headers == [(b"Host", b"example.test"), (b"X-A", b"1")]


def test_body_bytes_after_the_head_are_left_alone() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel"
    head = parse(raw)
    assert head.head_length == raw.index(b"hel")


def test_http10_defaults_to_close() -> None:
    head = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert head.keep_alive is False
    assert head.host == ""


def test_http11_without_host_is_refused() -> None:
    error = refused(b"GET / HTTP/1.1\r\nX: y\r\n\r\n")
    assert (error.status, error.reason_code) == (400, "bad_request")


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ],
    ids=["cl-then-te", "te-then-cl", "duplicate-cl", "te-not-chunked-last", "negative-cl"],
)
def test_smuggling_shapes_are_refused(raw: bytes) -> None:
    assert refused(raw).status == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.x\r\nHost: a\r\n\r\n",
        b"GET / HTTP/12.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n : x\r\n\r\n",
    ],
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    assert refused(raw).status == 400


def test_request_line_limit_gives_414() -> None:
    limits = HeadLimits(max_request_line=100)
    error = refused(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n", limits)
    assert (error.status, error.reason_code) == (414, "url_too_long")


def test_header_count_limit_gives_431() -> None:
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(11))
    error = refused(
        b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n", HeadLimits(max_header_count=10)
    )
    assert (error.status, error.reason_code) == (431, "too_many_headers")


def test_head_size_limit_gives_431() -> None:
    error = refused(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 500 + b"\r\n\r\n",
        HeadLimits(max_head_bytes=200),
    )
    assert (error.status, error.reason_code) == (431, "head_too_large")


def test_incomplete_head_is_checked_while_it_arrives() -> None:
    limits = HeadLimits(max_request_line=50, max_head_bytes=120)
    check_incomplete(b"GET / HTTP/1.1\r\nHost: a\r\n", limits)  # fine so far
    with pytest.raises(HeadError) as caught:
        check_incomplete(b"GET /" + b"a" * 60, limits)
    assert caught.value.status == 414
    with pytest.raises(HeadError) as caught:
        check_incomplete(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 30, limits)
    assert caught.value.status == 431


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ;=/", max_size=40).map(str.strip)


@settings(max_examples=200, deadline=None)
@given(
    path=st.lists(token, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    headers=st.lists(st.tuples(token, value), max_size=20),
)
def test_well_formed_heads_round_trip(path: str, headers: list[tuple[str, str]]) -> None:
    raw = f"GET {path} HTTP/1.1\r\nHost: h\r\n".encode()
    raw += b"".join(f"X-{name}: {val}\r\n".encode() for name, val in headers)
    raw += b"\r\n"
    head = parse(raw)
    assert head.path == path.encode()
    assert [(n.decode(), v.decode()) for n, v in head.headers[1:]] == [
        (f"X-{name}", val) for name, val in headers
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_head_error(data: bytes) -> None:
    raw = data + b"\r\n\r\n"
    try:
        parse(raw)
    except HeadError as error:
        assert error.status in (400, 414, 431, 501, 505)


# where llhttp and RFC 9110/9112 part (the rules of poolwarden.http.rules)


def test_trailing_whitespace_is_stripped_from_field_values() -> None:
    head = parse(b"GET / HTTP/1.1\r\nHost: a.test \t\r\nX-A: value \t \r\n\r\n")
    assert head.headers == [(b"Host", b"a.test"), (b"X-A", b"value")]
    assert head.host == "a.test"


@pytest.mark.parametrize("method", ["FOO", "brew", "PRI", "DESCRIBE", "X-Y.Z"])
def test_extension_methods_are_parsed(method: str) -> None:
    head = parse(f"{method} /x?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n".encode())
    assert (head.method, head.path, head.query) == (method, b"/x", b"q=1")


def test_an_extension_method_after_an_empty_line() -> None:
    assert parse(b"\r\nFOO / HTTP/1.1\r\nHost: a\r\n\r\n").method == "FOO"


def test_a_method_that_is_not_a_token_is_malformed() -> None:
    error = refused(b"F(O) / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (error.status, error.reason_code) == (400, "bad_request")


def test_connect_is_not_implemented() -> None:
    error = refused(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
    assert (error.status, error.reason_code) == (501, "not_implemented")


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/3.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET / HTTP/0.9\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ],
    ids=["2.0", "3.0", "9.9", "0.9", "h2_preface"],
)
def test_other_major_versions_are_not_supported(raw: bytes) -> None:
    error = refused(raw)
    assert (error.status, error.reason_code) == (505, "version_not_supported")


def test_a_higher_minor_version_is_served_as_http11() -> None:
    head = parse(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")
    assert (head.http_version, head.keep_alive) == ("1.1", True)
    assert refused(b"GET / HTTP/1.2\r\nX: y\r\n\r\n").status == 400  # Host is required


@pytest.mark.parametrize("target", [b"/x?page=1#posts", b"/x#posts", b"http://a/x#f"])
def test_a_fragment_in_the_target_is_refused(target: bytes) -> None:
    error = refused(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (error.status, error.reason_code) == (400, "bad_request")
    assert "fragment" in error.message


def test_transfer_encoding_in_http10_is_faulty_framing() -> None:
    error = refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (error.status, error.reason_code) == (400, "bad_request")
    assert "HTTP/1.0" in error.message
