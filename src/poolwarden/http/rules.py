"""What a complete request head must satisfy, judged alike everywhere.

The front end judges a connection's first head and the workers every later
one, both with llhttp; the rules llhttp does not apply, or applies otherwise
than RFC 9110 and RFC 9112 say, are here, so that a request gets the same
answer whichever of them reads it. Nothing here does I/O: a rule returns the
`Refusal` the caller answers with, and the caller raises its own error.
(`http.fields` and `http.methods` hold the rules for fields and methods.)
"""

from __future__ import annotations

from typing import NamedTuple

import httptools


class Refusal(NamedTuple):
    """A request refused by a rule: the status, the reason code, one sentence."""

    status: int
    reason_code: str
    message: str


_UNSUPPORTED_VERSION = Refusal(
    505, "version_not_supported", "only HTTP/1.x is served on this connection"
)
_CONNECT = Refusal(501, "not_implemented", "CONNECT is not implemented: this is not a proxy")
_FRAGMENT = Refusal(400, "bad_request", "a fragment (#) in the request target")
_TRANSFER_CODED_HTTP10 = Refusal(
    400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request (faulty framing)"
)


def request_parser(callbacks: object) -> httptools.HttpRequestParser:
    """An llhttp request parser calling `callbacks`, set up for these rules.

    llhttp refuses any version but 0.9, 1.0, 1.1 and 2.0 as malformed; it
    is told to accept every `HTTP/DIGIT.DIGIT` (RFC 9112 §2.3) so that
    `request_verdict` can answer 505 to a major version other than 1, and
    serve a higher 1.x as 1.1. Nothing else is relaxed.
    """
    parser = httptools.HttpRequestParser(callbacks)
    parser.set_dangerous_leniencies(lenient_version=True)
    return parser


def request_verdict(
    method: bytes, http_version: str, target: bytes, transfer_coded: bool
) -> str | Refusal:
    """The HTTP version to serve a parsed head as, or why it is refused.

    - A major version other than 1 gets 505 (RFC 9110 §15.6.6): this server
      speaks HTTP/1.x only, and an HTTP/2.0 request line (or an HTTP/2
      preface) must not be served as if it were HTTP/1.1.
    - CONNECT gets 501 (RFC 9110 §9.3.6, §15.6.2): poolwarden is not a proxy.
      Its authority-form target is well-formed, so it is not a 400.
    - A fragment in the target gets 400. A fragment is not part of the
      request-target grammar (RFC 9112 §3.2); stricter than dropping it,
      because a target a client should never send is better refused than
      guessed at, and it must never reach the app's path or query.
    - Transfer-Encoding in an HTTP/1.0 request gets 400, and the connection
      closes: RFC 9112 §6.1 says the message has faulty framing (an HTTP/1.0
      recipient in front could have framed it by Content-Length).

    A served request is HTTP/1.0 or HTTP/1.1: RFC 9110 §6.2 has a higher
    minor version processed as the highest one implemented, so HTTP/1.2 is
    served as HTTP/1.1.
    """
    if http_version[0] != "1":
        return _UNSUPPORTED_VERSION
    if method == b"CONNECT":
        return _CONNECT
    if b"#" in target:
        return _FRAGMENT
    if http_version == "1.1":
        return http_version
    if http_version == "1.0":
        return _TRANSFER_CODED_HTTP10 if transfer_coded else http_version
    return "1.1"
