"""Request methods: any token reaches the app, whatever llhttp knows.

RFC 9110 §9.1: a method is a token, and a server that does not implement a
method answers 501. The app is what implements methods here, and a WSGI or
ASGI app can implement any (gunicorn and uvicorn pass extension methods
through), so every well-formed method is passed on. llhttp only parses the
methods it has a name for and refuses the others as malformed; for those, it
is given a method it knows in their place (`stand_in_method`), and the real
one is kept beside it. A method that is not a token stays malformed: 400.
"""

from __future__ import annotations

from poolwarden.http.fields import is_token

LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND "
    b"PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE "
    b"M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE "
    b"QUERY".split()
)
"""The methods llhttp parses as HTTP requests. Not among them: `PRI`, which
llhttp takes for the start of an HTTP/2 connection preface (so that the
preface gets the same 505 as any HTTP/2.0 request line), and RTSP's."""

STAND_IN = b"GET"
"""What llhttp is given for an extension method: for a request, llhttp frames
the body by its headers alone, whatever the method."""

LONGEST_METHOD = 64
"""Longest extension method passed on, in bytes; longer ones are left to
llhttp, which refuses them (400). The longest registered method
(`UPDATEREDIRECTREF`) has 17."""


def stand_in_method(method: bytes) -> bytes | None:
    """The method to give llhttp in place of `method`, or None to give it as is.

    None for the methods llhttp knows, and for those that are not a token
    or too long: llhttp refuses them, which is right.
    """
    if method in LLHTTP_METHODS or len(method) > LONGEST_METHOD or not is_token(method):
        return None
    return STAND_IN
