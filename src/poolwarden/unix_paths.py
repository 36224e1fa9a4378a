"""Unix socket addresses for paths longer than an address can hold."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_SUN_PATH_MAX = 107


@contextlib.contextmanager
def reachable(path: str, room: int = 0) -> Iterator[str]:
    """`path`, or an alias of it short enough for a Unix socket address.

    A state directory can be deeper than the 107 bytes a socket address
    holds. Then the directory is opened and named through
    `/proc/self/fd/N/` (Linux), which `bind`, `connect`, `stat` and `rename`
    all follow; the alias is valid inside the `with` block only. `room` is
    how many bytes longer a sibling name the caller will use is (the
    server binds a temporary name first).
    """
    if len(os.fsencode(path)) + room <= _SUN_PATH_MAX:
        yield path
        return
    directory = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(path)}"
    finally:
        os.close(directory)
