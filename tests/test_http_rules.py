"""The shared HTTP rules (`poolwarden.http`), without processes."""

from __future__ import annotations

import httptools
import pytest

from poolwarden.http.chunks import chunk_size
from poolwarden.http.fields import field_value, is_token, valid_field_name
from poolwarden.http.methods import LLHTTP_METHODS, STAND_IN, stand_in_method
from poolwarden.http.rules import Refusal, request_parser, request_verdict


class _Quiet:
    """httptools callbacks that record nothing."""


def llhttp_parses(method: bytes) -> bool:
    parser = httptools.HttpRequestParser(_Quiet())
    try:
        parser.feed_data(method + b" /x HTTP/1.1\r\nHost: h\r\n\r\n")
    except httptools.HttpParserUpgrade:
        return True  # CONNECT
    except httptools.HttpParserError:
        return False
    return True


def test_llhttp_parses_every_method_it_is_said_to_know() -> None:
    """If an httptools upgrade drops one, it gets a stand-in instead of a 400."""
    assert [method for method in sorted(LLHTTP_METHODS) if not llhttp_parses(method)] == []


@pytest.mark.parametrize("method", [b"FOO", b"foo", b"BREW", b"PRI", b"DESCRIBE", b"X-Y.Z!"])
def test_extension_methods_get_a_stand_in(method: bytes) -> None:
    assert stand_in_method(method) == STAND_IN
    assert llhttp_parses(STAND_IN)


@pytest.mark.parametrize("method", [b"GET", b"POST", b"CONNECT", b"PROPFIND", b"M-SEARCH"])
def test_known_methods_go_to_llhttp_as_they_are(method: bytes) -> None:
    assert stand_in_method(method) is None


@pytest.mark.parametrize("method", [b"", b"G@T", b"G T", b"G\x01T", b"A" * 65, b"caf\xc3\xa9"])
def test_malformed_methods_are_left_for_llhttp_to_refuse(method: bytes) -> None:
    assert stand_in_method(method) is None
    assert not llhttp_parses(method)


@pytest.mark.parametrize(
    ("method", "version", "target", "transfer_coded", "verdict"),
    [
        (b"GET", "1.1", b"/x", False, "1.1"),
        (b"GET", "1.0", b"/x", False, "1.0"),
        (b"POST", "1.1", b"/x", True, "1.1"),
        (b"GET", "1.2", b"/x", False, "1.1"),
        (b"POST", "1.9", b"/x", True, "1.1"),
        (b"GET", "2.0", b"/x", False, 505),
        (b"GET", "0.9", b"/x", False, 505),
        (b"GET", "9.1", b"/x", False, 505),
        (b"CONNECT", "1.1", b"host:443", False, 501),
        (b"CONNECT", "2.0", b"host:443", False, 505),
        (b"GET", "1.1", b"/x?page=1#posts", False, 400),
        (b"GET", "1.1", b"/x#", False, 400),
        (b"POST", "1.0", b"/x", True, 400),
        (b"FOO", "1.1", b"/x", False, "1.1"),
    ],
)
def test_request_verdict(
    method: bytes, version: str, target: bytes, transfer_coded: bool, verdict: str | int
) -> None:
    """The version a head is served as (a higher HTTP/1.x as 1.1), or the status refusing it."""
    result = request_verdict(method, version, target, transfer_coded)
    assert (result.status if isinstance(result, Refusal) else result) == verdict


def test_refusals_name_their_reason() -> None:
    assert request_verdict(b"GET", "2.0", b"/", False) == (
        505,
        "version_not_supported",
        "only HTTP/1.x is served on this connection",
    )
    refusal = request_verdict(b"CONNECT", "1.1", b"h:443", False)
    assert isinstance(refusal, Refusal) and refusal.reason_code == "not_implemented"


@pytest.mark.parametrize("version", [b"1.2", b"2.0", b"3.0", b"9.1", b"0.9"])
def test_the_parser_reads_any_single_digit_version(version: bytes) -> None:
    parser = request_parser(_Quiet())
    parser.feed_data(b"GET / HTTP/" + version + b"\r\nHost: h\r\n\r\n")
    assert parser.get_http_version() == version.decode()


@pytest.mark.parametrize(
    ("value", "stripped"),
    [
        (b"value", b"value"),
        (b"value \t ", b"value"),
        (b"a b", b"a b"),
        (b"", b""),
        (b" \t", b""),
    ],
)
def test_field_values_lose_trailing_whitespace(value: bytes, stripped: bytes) -> None:
    assert field_value(value) == stripped


@pytest.mark.parametrize("name", [b"X-A", b"x_a", b"!#$%&'*+-.^_`|~09az", "X-Text"])
def test_token_field_names_are_valid(name: bytes | str) -> None:
    assert valid_field_name(name)
    assert valid_field_name(name)  # now from the cache


@pytest.mark.parametrize(
    "name", [b"X A", b"X:A", b"X\r\nA", b"", b"X\x00", b"caf\xc3\xa9", "X A", "X:", ""]
)
def test_other_field_names_are_not(name: bytes | str) -> None:
    assert not valid_field_name(name)


def test_is_token() -> None:
    assert is_token(b"PATCH")
    assert not is_token(b"PA TCH")


@pytest.mark.parametrize(
    ("line", "digits"),
    [
        (b"1f", b"1f"),
        (b"5;a", b"5"),
        (b"5 ; a = b ; c", b"5"),
        (b'5;a="x\\"y"', b"5"),
        (b"5 ", None),
        (b"5;a b", None),
        (b"", None),
    ],
)
def test_chunk_size_lines(line: bytes, digits: bytes | None) -> None:
    assert chunk_size(line) == digits
