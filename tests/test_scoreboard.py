"""The scoreboard: slots written by one process and read by another, via a memfd.

The cross-process tests run a real child interpreter that attaches to the
scoreboard by fd, the way a worker does, and writes while this process reads.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from poolwarden.scoreboard import (
    HEADER_SIZE,
    SLOT_SIZE,
    WEBSOCKET_PHASES,
    Phase,
    Scoreboard,
    SlotView,
    size_for,
)
from tests.conftest import REPO


@pytest.fixture
def board() -> Iterator[Scoreboard]:
    scoreboard = Scoreboard.create(4, "test-scoreboard")
    yield scoreboard
    scoreboard.close()


def idle(index: int, served: int = 0) -> SlotView:
    return SlotView(index, Phase.IDLE, 0, 0, 0.0, served, "", "", "")


def test_a_new_board_is_idle(board: Scoreboard) -> None:
    assert board.read_all() == [idle(i) for i in range(4)]
    assert board.busy() == []
    assert board.served() == 0
    assert os.fstat(board.fd).st_size == size_for(4) == HEADER_SIZE + 4 * SLOT_SIZE


def test_a_request_through_its_phases(board: Scoreboard) -> None:
    writer = board.writer(2)
    writer.begin(7, 1700000000.5, b"POST", b"/orders?id=3", b"127.0.0.1:50000")
    me = threading.get_ident()
    expected = SlotView(
        2, Phase.APP, 0, 7, 1700000000.5, 0, "POST", "/orders?id=3", "127.0.0.1:50000", me
    )
    assert board.read(2) == expected
    assert board.busy() == [expected]
    writer.responding(201)
    assert (board.read(2).phase, board.read(2).status) == (Phase.RESPONDING, 201)
    writer.end()
    assert board.read(2) == SlotView(
        2, Phase.IDLE, 0, 7, 1700000000.5, 1, "POST", "/orders?id=3", "127.0.0.1:50000", me
    )
    assert board.busy() == []
    board.writer(0).end()
    assert board.served() == 2


def test_long_fields_are_cut_to_their_slots(board: Scoreboard) -> None:
    board.writer(0).begin(1, 0.0, b"M" * 40, b"/" + b"p" * 400, b"c" * 100)
    slot = board.read(0)
    assert (len(slot.method), len(slot.path), len(slot.client)) == (12, 200, 52)
    assert board.read(1) == idle(1)


def test_writer_index_is_checked(board: Scoreboard) -> None:
    with pytest.raises(IndexError):
        board.writer(4)
    with pytest.raises(IndexError):
        board.writer(-1)


def test_attach_refuses_what_is_not_a_scoreboard() -> None:
    fd = os.memfd_create("not-a-scoreboard")
    try:
        os.ftruncate(fd, 4096)
        with pytest.raises(ValueError, match="not a poolwarden scoreboard"):
            Scoreboard.attach(fd)
    finally:
        os.close(fd)


def test_attach_sees_the_writes_of_the_creator(board: Scoreboard) -> None:
    other = Scoreboard.attach(os.dup(board.fd))
    try:
        assert other.slots == 4
        board.writer(3).begin(9, 1.0, b"GET", b"/x", b"peer")
        assert other.read(3).path == "/x"
    finally:
        other.close()
        os.close(other.fd)


def test_a_writer_dead_mid_write_does_not_hang_the_reader(board: Scoreboard) -> None:
    """A worker killed inside `_write` leaves the count odd forever."""
    board.writer(1).begin(5, 2.0, b"GET", b"/crash", b"peer")
    with mmap.mmap(board.fd, size_for(board.slots)) as view:
        offset = HEADER_SIZE + SLOT_SIZE
        (seq,) = struct.unpack_from("<I", view, offset)
        struct.pack_into("<I", view, offset, seq + 1)
    # The master reads a reaped worker's board as final: one copy, no wait.
    started = time.monotonic()
    slot = board.read(1, final=True)
    assert time.monotonic() - started < 0.05
    assert (slot.phase, slot.conn_id, slot.path) == (Phase.APP, 5, "/crash")
    assert [s.index for s in board.busy(final=True)] == [1]
    # A live reader waits a little for the writer, then settles for the copy.
    started = time.monotonic()
    assert board.read(1) == slot
    assert 0.05 < time.monotonic() - started < 2


@pytest.mark.parametrize("seen", ["fields of two writes", "old fields under a new count"])
def test_a_copy_the_cpu_reordered_is_not_taken_for_a_whole_one(
    board: Scoreboard, seen: str
) -> None:
    """What a reader on a weakly ordered CPU (aarch64) can see mid-write: the
    counter even and unchanged, but the fields not (or not yet) one write's."""
    writer = board.writer(1)
    writer.begin(5, 2.0, b"GET", b"/first", b"peer")
    assert board.read(1).consistent
    offset = HEADER_SIZE + SLOT_SIZE
    with mmap.mmap(board.fd, size_for(board.slots)) as view:
        if seen == "fields of two writes":
            path_at = offset + 16 + 8 + 8 + 12
            view[path_at : path_at + 7] = b"/second"
        else:
            (seq,) = struct.unpack_from("<I", view, offset)
            struct.pack_into("<I", view, offset, seq + 2)
    started = time.monotonic()
    slot = board.read(1)
    assert 0.05 < time.monotonic() - started < 2  # it waited for a whole copy
    assert not slot.consistent
    assert not board.read(1, final=True).consistent
    # the next whole write is whole again
    writer.begin(6, 3.0, b"GET", b"/third", b"peer")
    assert (board.read(1).consistent, board.read(1).path) == (True, "/third")


def run_child(board: Scoreboard, code: str) -> subprocess.Popen[bytes]:
    """A child interpreter with the board's fd, as a worker is started."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(board.fd)],
        pass_fds=(board.fd,),
        cwd=REPO,
    )


def test_a_child_process_writes_what_the_parent_reads(board: Scoreboard) -> None:
    child = run_child(
        board,
        """
        import sys
        from poolwarden.scoreboard import Scoreboard
        board = Scoreboard.attach(int(sys.argv[1]))
        board.writer(0).begin(11, 3.5, b"PUT", b"/from-child", b"10.0.0.1:1")
        board.writer(1).begin(12, 4.5, b"GET", b"/done", b"10.0.0.2:2")
        board.writer(1).end()
        """,
    )
    assert child.wait(20) == 0
    read = board.read(0)
    assert read.thread != 0  # the writing thread's id, as faulthandler prints it
    assert dataclasses.replace(read, thread=0) == SlotView(
        0, Phase.APP, 0, 11, 3.5, 0, "PUT", "/from-child", "10.0.0.1:1"
    )
    assert board.busy() == [board.read(0)]
    assert board.served() == 1


def test_reads_are_consistent_while_a_child_writes(board: Scoreboard) -> None:
    """Every copy the reader takes is one whole write, never half of two."""
    child = run_child(
        board,
        """
        import sys, time
        from poolwarden.scoreboard import Scoreboard
        writer = Scoreboard.attach(int(sys.argv[1])).writer(0)
        deadline = time.monotonic() + 1.0
        n = 1
        while time.monotonic() < deadline:
            text = b"%d" % n
            writer.begin(n, float(n), text[:12], b"/" + text * (190 // len(text)), text)
            n += 1
        writer.begin(0, 0.0, b"DONE", b"/", b"")
        """,
    )
    reads = 0
    changes = set()
    try:
        while child.poll() is None or reads == 0:
            slot = board.read(0)
            reads += 1
            if slot.method == "DONE" or slot.conn_id == 0:
                continue
            text = str(slot.conn_id)
            assert (slot.method, slot.client, slot.started) == (
                text[:12],
                text,
                float(slot.conn_id),
            )
            assert slot.path == "/" + text * (190 // len(text))
            changes.add(slot.conn_id)
    finally:
        child.kill()
        child.wait(10)
    assert child.returncode == 0
    assert len(changes) > 10, "the reader never overlapped the writer"
    assert board.read(0).method == "DONE"


def test_the_sequence_count_wraps(board: Scoreboard) -> None:
    """2**31 writes to one slot are hours of traffic; the count must wrap, not raise."""
    writer = board.writer(0)
    writer._seq = 0xFFFFFFFE  # as after 2**31 - 1 writes
    writer.begin(1, 1.0, b"GET", b"/wrapped", b"peer")
    assert writer._seq == 0
    assert board.read(0).path == "/wrapped"
    writer.end()
    assert (board.read(0).phase, board.read(0).served) == (Phase.IDLE, 1)


def test_a_websocket_through_its_phases(board: Scoreboard) -> None:
    """Handshake in the app, open at a frame boundary, mid-frame, closed;
    its message counts ride in words of their own."""
    writer = board.writer(3)
    writer.begin(9, 5.0, b"GET", b"/chat", b"127.0.0.1:4000")
    assert board.read(3).phase is Phase.APP  # a crash here still gets a 502
    writer.websocket(writing=True)
    slot = board.read(3)
    assert (slot.phase, slot.status, slot.frame_boundary) == (Phase.WEBSOCKET_WRITING, 101, False)
    writer.websocket(writing=False)
    writer.messages(3, 7)
    slot = board.read(3)
    assert (slot.phase, slot.frame_boundary, slot.received, slot.sent) == (
        Phase.WEBSOCKET,
        True,
        3,
        7,
    )
    assert (slot.path, slot.client, slot.consistent) == ("/chat", "127.0.0.1:4000", True)
    assert board.busy() == [slot] and board.busy_count() == 1
    assert slot.phase in WEBSOCKET_PHASES
    writer.end()
    assert (board.read(3).phase, board.served()) == (Phase.IDLE, 1)
    # the next request in the slot starts its counts afresh
    writer.begin(10, 6.0, b"GET", b"/next", b"peer")
    slot = board.read(3)
    assert (slot.received, slot.sent, slot.phase) == (0, 0, Phase.APP)
    assert slot.phase not in WEBSOCKET_PHASES


def test_message_counts_are_outside_the_checked_fields(board: Scoreboard) -> None:
    """Counting a message costs two stores and no seqlock write: the copy
    stays whole while they change."""
    writer = board.writer(0)
    writer.begin(1, 1.0, b"GET", b"/ws", b"peer")
    for count in range(1, 50):
        writer.messages(count, count * 2)
        slot = board.read(0)
        assert slot.consistent and (slot.received, slot.sent) == (count, count * 2)
