"""The envelope around a stack dump taken through `sys.remote_exec`.

The worker's stack pipe carries two kinds of dump. The one faulthandler
writes from the STACK_SIGNAL handler is bare text, in many small writes,
with no mark of its end. The one a worker writes when the master asked
through `sys.remote_exec` (PEP 768, `master/remote_exec.py`) comes in an
envelope naming the request's token::

    --- poolwarden stack dump 1f2e3d4c5b6a7980 ---
    Current thread 0x00007f3c2a1b4740 (most recent call first):
      File ...
    --- end of poolwarden stack dump 1f2e3d4c5b6a7980 ---

and in one `write()`. So the master knows it is whole (no "quiet for a
moment" guess), knows which request it answers (one that comes late, after
the master fell back to the signal, is told apart and dropped), and can lift
it out of a pipe that also holds a signal's dump: a single write into a pipe
with room for it (1 MiB, emptied before each capture) lands whole, since
Linux holds the pipe's lock for all of it, so the two never interleave.

Both sides import this module: the worker to wrap, the master to unwrap.
"""

from __future__ import annotations

import re

_HEADER = "--- poolwarden stack dump {token} ---\n"
_TRAILER = "--- end of poolwarden stack dump {token} ---\n"
_ENVELOPE = re.compile(
    rb"--- poolwarden stack dump ([0-9a-f]+) ---\n(.*?)--- end of poolwarden stack dump \1 ---\n",
    re.DOTALL,
)
_TOKEN = re.compile(r"[0-9a-f]+")


def wrap(token: str, dump: bytes) -> bytes:
    """`dump` in the envelope of request `token` (lowercase hex), ready for one write."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"a token is lowercase hex, not {token!r}")
    return _HEADER.format(token=token).encode() + dump + _TRAILER.format(token=token).encode()


def unwrap(data: bytes, token: str | None) -> tuple[bytes | None, bytes]:
    """(the dump in `token`'s envelope, or None when it is not all there;
    everything else, every whole envelope taken out).

    What is left is a signal's dump, if one came; envelopes of other tokens
    are answers to earlier requests that came too late, and are dropped.
    """
    found: bytes | None = None
    rest: list[bytes] = []
    start = 0
    for match in _ENVELOPE.finditer(data):
        rest.append(data[start : match.start()])
        start = match.end()
        if found is None and token is not None and match.group(1).decode() == token:
            found = match.group(2)
    rest.append(data[start:])
    return found, b"".join(rest)
