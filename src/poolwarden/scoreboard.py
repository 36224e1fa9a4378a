"""The scoreboard: what each worker thread or task is doing, in shared memory.

```
 master: creates a memfd per worker, maps it, reads it (list requests,
         pick the least busy worker, see what was in flight at a crash)
 worker: maps the same fd and writes its slots, no syscalls per request
```

One slot per WSGI thread, concurrent ASGI request or open WebSocket. Each slot is written by
exactly one thread of its worker and guarded by a sequence counter (a
seqlock): the writer makes it odd while it writes and even when done, and a
reader retries until it sees the same even value before and after its copy.
The counter is stored and loaded through a memoryview of unsigned ints, one
aligned 4-byte access each: `struct.pack_into` zeroes its target and then
writes it byte by byte, so a reader could see a half-written counter (the 0
in between, say) and take a torn copy for a whole one.

A seqlock alone relies on the order of the writer's stores reaching the
reader, which x86 keeps and aarch64 (Graviton, Ampere, Apple silicon) does
not, and Python has no memory fence. So each write also stores a CRC-32 of
the slot's request fields seeded with the counter value the write ends at:
a copy whose fields are half of two writes, or the fields of an earlier
write under a later counter, fails the check and is read again. What a
reader may still see on a weakly ordered CPU: the phase word (phase and
status), the served count and a WebSocket's two message counts are single
aligned 4-byte words, each always a value some store wrote, but any of them
may be seen a moment before or after the rest of the slot. A dead worker's
board (`final`) is exact: its stores were all visible once it exited.

The header's `settled` word counts the connections dispatched to the worker
that no longer wait to be taken up: their first request entered the app (its
slot is busy from then on), or they were closed or handed back before it.
The master counts what it dispatched; the difference is the connections
handed over and not yet started, which a busy count cannot see. With the
slots that are busy, that is what the worker has in use (`in_use`). An idle
keep-alive connection counts for nothing, as it holds no thread.

The memory belongs to the master, so it outlives a worker that crashes in the
middle of a request, which is the point.

```
 header: magic | slots | pid | settled
 slot: seq | crc | phase,status | served | conn_id started method path client thread | in | out
       word  word  word           word     the request fields (the CRC covers them)   word word
```

An open WebSocket keeps its slot for its whole life (`Phase.WEBSOCKET`), with
the messages it received and sent in the last two words (stored without the
seqlock, like `served`). Its phase word also says whether the connection's
byte stream is at a frame boundary, which decides whether the master may
write a close frame of its own to the client of a dead worker: the worker
stores `WEBSOCKET_WRITING` before it hands a frame to its transport and
`WEBSOCKET` again only once the transport's write buffer is empty after the
write. A frame the transport still buffers dies with the worker half sent
(the kernel has its beginning, the rest is gone), so "clean" means exactly
"every byte written so far is in the kernel": the master reads `WEBSOCKET`
as a clean boundary and anything else as a stream it must not add to.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass


class Phase(enum.IntEnum):
    """Where a slot's request is; the master answers a crash by this."""

    IDLE = 0
    APP = 1
    """The app is running and no response byte was sent: a crash here can
    still be answered with a 502."""
    RESPONDING = 2
    """The response has started; a crash here can only close the connection."""
    WEBSOCKET = 3
    """An open WebSocket (101 sent) whose every written byte reached the
    kernel: the stream is at a frame boundary, so the master may close it
    with a close frame of its own (1011) if the worker dies."""
    WEBSOCKET_WRITING = 4
    """An open WebSocket with a frame being written, or still in the
    worker's transport buffer: a frame from the master would land inside it."""


WEBSOCKET_PHASES = frozenset((Phase.WEBSOCKET, Phase.WEBSOCKET_WRITING))
"""An open WebSocket is not a request in flight: no request time-out applies."""


_SEQ_MASK = 0xFFFFFFFF
"""The counter wraps; at 20k requests a second on one slot, 2**32 comes in hours."""
# phase, status, served, conn_id, started (unix time), method, path, client,
# thread (the writer's `threading.get_ident()`, which faulthandler's stack
# dumps print, so a dumped thread can be matched to its request).
# The first two words (phase and status; served) are each one aligned 4-byte
# store, so `responding` and `end` change them without the seqlock.
_BODY = struct.Struct("<BxHIQd12s200s52sQ")
_FIELDS = struct.Struct("<Qd12s200s52sQ")
"""The request fields: `_BODY` after its two words, written only by `begin`."""
assert _FIELDS.size == _BODY.size - 8
_MESSAGES = struct.Struct("<II")
"""A WebSocket's messages received and sent, after the request fields."""
_MESSAGES_AT = 4 + 4 + _BODY.size
SLOT_SIZE = _MESSAGES_AT + _MESSAGES.size  # seq, crc of the fields, body, messages
assert SLOT_SIZE % 4 == 0, "every slot's counter must be 4-byte aligned"
_HEADER = struct.Struct("<IIQ")  # magic, slot count, pid
_SETTLED_WORD = _HEADER.size >> 2
"""The header word counting settled connections (one aligned 4-byte store)."""
HEADER_SIZE = 64
MAGIC = 0x50574B31  # "PWK1"
READ_ATTEMPTS = 100
"""Quick copies a reader tries before it starts pausing between attempts."""
READ_PAUSE = 0.0005
READ_PATIENCE = 0.1
"""Seconds a reader waits for a writer stuck mid-write before it settles for
the copy it has (seconds more than a preempted writer ever needs)."""


@dataclass(frozen=True, slots=True)
class SlotView:
    """A consistent copy of one slot."""

    index: int
    phase: Phase
    status: int
    conn_id: int
    started: float
    served: int
    method: str
    path: str
    client: str
    thread: int = 0
    consistent: bool = True
    """False when the reader gave up waiting for a whole copy (a writer
    stopped or dead mid-write): the fields may mix two writes."""
    received: int = 0
    """Messages an open WebSocket received from its client."""
    sent: int = 0
    """Messages an open WebSocket sent to its client."""

    @property
    def frame_boundary(self) -> bool:
        """An open WebSocket whose stream the master may add a close frame to."""
        return self.phase is Phase.WEBSOCKET


def size_for(slots: int) -> int:
    return HEADER_SIZE + slots * SLOT_SIZE


class Scoreboard:
    """A mapped scoreboard; the master creates it, the worker attaches to it."""

    def __init__(self, fd: int, slots: int, *, owner: bool) -> None:
        self.fd = fd
        self.slots = slots
        self.owner = owner
        self._map = mmap.mmap(fd, size_for(slots))
        self._seqs = memoryview(self._map).cast("I")
        self._settle_lock = threading.Lock()

    @classmethod
    def create(cls, slots: int, name: str = "poolwarden-scoreboard") -> Scoreboard:
        """A new zeroed scoreboard in a memfd the worker inherits."""
        fd = os.memfd_create(name, 0)
        os.ftruncate(fd, size_for(slots))
        board = cls(fd, slots, owner=True)
        _HEADER.pack_into(board._map, 0, MAGIC, slots, 0)
        return board

    @classmethod
    def attach(cls, fd: int) -> Scoreboard:
        """Map a scoreboard the master created (worker side)."""
        header = os.pread(fd, _HEADER.size, 0)
        magic, slots, _ = _HEADER.unpack(header)
        if magic != MAGIC:
            raise ValueError("fd is not a poolwarden scoreboard")
        return cls(fd, slots, owner=False)

    def writer(self, index: int) -> SlotWriter:
        if not 0 <= index < self.slots:
            raise IndexError(index)
        return SlotWriter(self._map, self._seqs, HEADER_SIZE + index * SLOT_SIZE)

    def read(self, index: int, *, final: bool = False) -> SlotView:
        """A consistent copy of slot `index`.

        `final` says the writer is gone (its worker was reaped): the memory
        will not change again, so one copy is all there is, even if the writer
        died between its two counter updates and left the count odd for good.
        """
        offset = HEADER_SIZE + index * SLOT_SIZE
        start, end = offset + 4, offset + SLOT_SIZE
        if final:
            raw = self._map[start:end]
            consistent = _whole(self._seqs[offset >> 2], raw)
        else:
            raw, consistent = self._consistent_copy(offset >> 2, start, end)
        fields = _BODY.unpack_from(raw, 4)
        phase, status, served, conn_id, started, method, path, client, thread = fields
        received, sent = _MESSAGES.unpack_from(raw, _MESSAGES_AT - 4)
        return SlotView(
            index=index,
            phase=Phase(phase),
            status=status,
            conn_id=conn_id,
            started=started,
            served=served,
            method=method.rstrip(b"\0").decode("latin-1"),
            path=path.rstrip(b"\0").decode("latin-1"),
            client=client.rstrip(b"\0").decode("latin-1"),
            thread=thread,
            consistent=consistent,
            received=received,
            sent=sent,
        )

    def _consistent_copy(self, seq_index: int, start: int, end: int) -> tuple[bytes, bool]:
        """The slot's bytes, copied between two equal, even counter values.

        A write takes a microsecond, so a few quick retries nearly always do;
        a writer preempted mid-write needs the scheduler to run it again,
        which is what the patient retries wait for. A writer that never
        finishes (stopped, or dead and not yet reaped) gets its last copy
        after `READ_PATIENCE` rather than a hung master, marked inconsistent.
        """
        view = self._map
        seqs = self._seqs
        attempts = 0
        deadline = 0.0
        while True:
            # One memcpy between the two loads keeps the window a writer can
            # hit short; the parsing happens on the copy, outside it.
            before = seqs[seq_index]
            raw = view[start:end]
            if before == seqs[seq_index] and not before & 1 and _whole(before, raw):
                return raw, True
            attempts += 1
            if attempts >= READ_ATTEMPTS:
                now = time.monotonic()
                if not deadline:
                    deadline = now + READ_PATIENCE
                elif now > deadline:
                    return raw, False
                time.sleep(READ_PAUSE)

    def read_all(self, *, final: bool = False) -> list[SlotView]:
        return [self.read(index, final=final) for index in range(self.slots)]

    def busy(self, *, final: bool = False) -> list[SlotView]:
        """Slots with a request in flight."""
        return [slot for slot in self.read_all(final=final) if slot.phase != Phase.IDLE]

    def busy_count(self) -> int:
        """How many slots have a request in flight: one C-level pass over
        every slot's phase byte, cheap enough for each dispatch."""
        phases = self._map[HEADER_SIZE + 8 : size_for(self.slots) : SLOT_SIZE]
        return len(phases) - phases.count(0)

    def served(self) -> int:
        """Requests completed by every slot: each count is one aligned 4-byte
        word, read without the seqlock (the master asks this every second)."""
        words = self._seqs
        first = (HEADER_SIZE >> 2) + 3
        step = SLOT_SIZE >> 2
        return sum(words[first + index * step] for index in range(self.slots))

    def settle(self) -> None:
        """(Worker side.) One dispatched connection was taken up: its first
        request is in its slot already, or it ended without one. Serving
        threads call this, hence the lock around the read-modify-write."""
        with self._settle_lock:
            words = self._seqs
            words[_SETTLED_WORD] = (words[_SETTLED_WORD] + 1) & _SEQ_MASK

    def settled(self) -> int:
        """(Master side.) Connections settled so far, modulo 2**32."""
        return int(self._seqs[_SETTLED_WORD])

    def in_use(self, dispatched: int) -> int:
        """Connections the worker has in use, `dispatched` of them handed to
        it so far: those not taken up yet, and the requests in its slots.
        `settled` is read first: a connection settling between the two reads
        is then counted twice for a moment, never missed."""
        waiting = (dispatched - self.settled()) & _SEQ_MASK
        return waiting + self.busy_count()

    def close(self) -> None:
        self._seqs.release()
        self._map.close()
        if self.owner:
            os.close(self.fd)


def _whole(seq: int, raw: bytes) -> bool:
    """Whether `raw` (a slot from its CRC word on) holds one whole write that
    ended at counter value `seq`. A never-written slot (all zeros) is whole."""
    crc = int.from_bytes(raw[:4], "little")
    fields = raw[12 : 12 + _FIELDS.size]
    if seq == 0 and crc == 0:
        return True
    return zlib.crc32(fields, seq) == crc


class SlotWriter:
    """The one writer of one slot; each call is a short seqlock write."""

    __slots__ = (
        "_client",
        "_conn_id",
        "_map",
        "_messages_index",
        "_method",
        "_offset",
        "_path",
        "_seq",
        "_seq_index",
        "_seqs",
        "_served",
        "_started",
        "_thread",
    )

    def __init__(self, view: mmap.mmap, seqs: memoryview, offset: int) -> None:
        self._map = view
        self._seqs = seqs
        self._offset = offset
        self._seq_index = offset >> 2
        self._messages_index = (offset + _MESSAGES_AT) >> 2
        self._seq = 0
        self._served = 0
        self._conn_id = 0
        self._started = 0.0
        self._method = b""
        self._path = b""
        self._client = b""
        self._thread = threading.get_ident()
        """The slot is written from the thread that made its writer."""

    def _write(self, phase: int, status: int) -> None:
        seqs = self._seqs
        index = self._seq_index
        seqs[index] = self._seq + 1  # odd: a write is under way
        done = (self._seq + 2) & _SEQ_MASK
        fields = _FIELDS.pack(
            self._conn_id,
            self._started,
            self._method,
            self._path,
            self._client,
            self._thread,
        )
        self._map[self._offset + 16 : self._offset + _MESSAGES_AT] = fields
        seqs[index + 1] = zlib.crc32(fields, done)
        seqs[index + 3] = self._served
        seqs[index + 2] = phase | (status << 16)
        self._seq = done
        seqs[index] = done

    def begin(
        self, conn_id: int, started: float, method: bytes, path: bytes, client: bytes
    ) -> None:
        """A request entered the app."""
        self._conn_id = conn_id
        self._started = started
        self._method = method
        self._path = path
        self._client = client
        self._write(Phase.APP, 0)
        if self._seqs[self._messages_index] or self._seqs[self._messages_index + 1]:
            self.messages(0, 0)

    def responding(self, status: int) -> None:
        """The first response byte is about to be sent (one atomic store)."""
        self._seqs[self._seq_index + 2] = Phase.RESPONDING | (status << 16)

    def websocket(self, writing: bool) -> None:
        """The WebSocket is open (101 sent): `writing` while a frame may be
        half sent, else at a frame boundary (one atomic store)."""
        phase = Phase.WEBSOCKET_WRITING if writing else Phase.WEBSOCKET
        self._seqs[self._seq_index + 2] = phase | (101 << 16)

    def messages(self, received: int, sent: int) -> None:
        """A WebSocket's message counts so far (two atomic stores)."""
        seqs = self._seqs
        seqs[self._messages_index] = received & _SEQ_MASK
        seqs[self._messages_index + 1] = sent & _SEQ_MASK

    def end(self) -> None:
        """The request is done, answered or not (two atomic stores)."""
        self._served = served = (self._served + 1) & _SEQ_MASK
        self._seqs[self._seq_index + 3] = served
        self._seqs[self._seq_index + 2] = Phase.IDLE
