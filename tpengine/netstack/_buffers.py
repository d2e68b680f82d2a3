"""Bounded send and receive buffers, out-of-order reassembly and the SACK scoreboard.

All sequence numbers here are unwrapped ints (see ``_seq``). Memory is bounded by the
configured capacities: the receive side never holds more than it advertised (RFC 9293
§3.8.6: the window is an offer of buffer space), the send side never takes more than
its capacity from the application.
"""

from __future__ import annotations

import bisect
from collections import deque

# A hostile peer could fill the window with one-byte segments; each costs a list entry.
MAX_OUT_OF_ORDER_CHUNKS = 512
MAX_SACK_RANGES = 64
_KEEP_VIEW = 4096


class SendBuffer:
    """Bytes the application gave us, from ``start`` (= the oldest unacknowledged byte).

    Kept as a queue of immutable pieces so that segments can carry views of them (no
    copy between the application's ``bytes`` and the TUN write): a large write of
    ``bytes`` is kept as is; small writes gather in a tail that is frozen into a piece
    when a segment needs its bytes.
    """

    __slots__ = ("_chunks", "_head", "_len", "_tail", "capacity", "start")

    def __init__(self, capacity: int, start: int) -> None:
        self.capacity = capacity
        self.start = start
        self._chunks: deque[bytes | memoryview] = deque()
        self._head = 0  # acknowledged bytes at the front of _chunks[0]
        self._tail = bytearray()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def end(self) -> int:
        """The sequence number after the last buffered byte."""
        return self.start + self._len

    @property
    def free(self) -> int:
        return self.capacity - self._len

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take as much of ``data`` as fits; return how many bytes were taken."""
        n = min(len(data), self.capacity - self._len)
        if n <= 0:
            return 0
        piece = data[:n] if n < len(data) else data
        if n < _KEEP_VIEW:
            self._tail += piece
            if len(self._tail) >= _KEEP_VIEW:
                self._freeze_tail()
        else:
            self._freeze_tail()
            if isinstance(piece, bytes) or (
                isinstance(piece, memoryview) and isinstance(piece.obj, bytes)
            ):
                self._chunks.append(piece)  # immutable: keep it, no copy
            else:
                self._chunks.append(bytes(piece))
        self._len += n
        return n

    def _freeze_tail(self) -> None:
        if self._tail:
            self._chunks.append(bytes(self._tail))
            self._tail = bytearray()

    def peek(self, seq: int, length: int) -> bytes | memoryview:
        """``length`` buffered bytes from sequence ``seq``: a view when they lie in one
        piece (valid for as long as it is held: pieces are immutable), else a copy."""
        offset = seq - self.start + self._head
        if self._tail and seq + length > self.end - len(self._tail):
            self._freeze_tail()
        pos = 0
        pieces: list[bytes | memoryview] = []
        end = offset + length
        for chunk in self._chunks:
            clen = len(chunk)
            if pos + clen > offset:
                lo = max(offset - pos, 0)
                hi = min(end - pos, clen)
                view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                pieces.append(view[lo:hi])
                if pos + clen >= end:
                    break
            pos += clen
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def acknowledge(self, upto: int) -> int:
        """Forget every byte before ``upto``; return how many were freed."""
        n = min(upto - self.start, self._len)
        if n <= 0:
            return 0
        self.start += n
        self._len -= n
        drop = n + self._head
        chunks = self._chunks
        while chunks and drop >= len(chunks[0]):
            drop -= len(chunks.popleft())
        if chunks:
            self._head = drop
        else:
            self._head = 0
            if drop:
                del self._tail[:drop]  # the tail is never viewed: peek freezes it first
        return n


class ReceiveBuffer:
    """In-order data waiting for the application, plus out-of-order segments.

    ``nxt`` is RCV.NXT: the first byte not yet received in order. Out-of-order data is
    kept as sorted, non-overlapping chunks and moved to the in-order part as soon as the
    hole before it fills (RFC 9293 §3.10.7.4, "segment text"; RFC 2018 for the SACK
    blocks that describe what is held).
    """

    __slots__ = (
        "_chunks",
        "_data",
        "_data_len",
        "_last_chunk_seq",
        "_starts",
        "capacity",
        "nxt",
        "ooo_bytes",
    )

    def __init__(self, capacity: int, nxt: int) -> None:
        self.capacity = capacity
        self.nxt = nxt
        # In-order data as a queue of pieces: large segment payloads stay views into
        # the packet they arrived in (no copy until the application reads them).
        self._data: deque[bytes | memoryview] = deque()
        self._data_len = 0
        self._starts: list[int] = []  # out-of-order chunk starts, sorted
        self._chunks: list[bytes] = []  # chunk payloads, parallel to _starts
        self.ooo_bytes = 0
        self._last_chunk_seq: int | None = None

    def __len__(self) -> int:
        """In-order bytes the application has not read yet."""
        return self._data_len

    @property
    def free(self) -> int:
        """Buffer space not taken by unread in-order data."""
        return self.capacity - self._data_len

    def read(self, max_bytes: int) -> bytes:
        data = self._data
        if max_bytes >= self._data_len:
            out = bytes(data[0]) if len(data) == 1 else b"".join(data)
            data.clear()
            self._data_len = 0
            return out
        pieces: list[bytes | memoryview] = []
        need = max_bytes
        while need:
            piece = data[0]
            if len(piece) <= need:
                pieces.append(data.popleft())
                need -= len(piece)
            else:
                view = piece if isinstance(piece, memoryview) else memoryview(piece)
                pieces.append(view[:need])
                data[0] = view[need:]
                need = 0
        self._data_len -= max_bytes
        return b"".join(pieces)

    def _append(self, piece: bytes | memoryview) -> None:
        # Small payloads are copied: a view would pin a whole packet for a few bytes.
        self._data.append(piece if len(piece) >= _KEEP_VIEW else bytes(piece))
        self._data_len += len(piece)

    def insert(self, seq: int, payload: bytes | memoryview) -> int:
        """Add a segment's text (already trimmed to the window); return bytes made in order."""
        end = seq + len(payload)
        if end <= self.nxt or not payload:
            return 0
        if seq > self.nxt:
            self._store_out_of_order(seq, payload)
            return 0
        before = self.nxt
        self._append(payload[self.nxt - seq :] if seq < self.nxt else payload)
        self.nxt = end
        if self._starts:
            self._pull_out_of_order()
        return self.nxt - before

    def _store_out_of_order(self, seq: int, payload: bytes | memoryview) -> None:
        end = seq + len(payload)
        self._last_chunk_seq = seq
        pieces: list[tuple[int, bytes]] = []
        pos = seq
        i = bisect.bisect_right(self._starts, seq) - 1
        i = max(i, 0)
        while i < len(self._starts) and pos < end:
            s = self._starts[i]
            e = s + len(self._chunks[i])
            if e > pos:
                if s >= end:
                    break
                if s > pos:
                    pieces.append((pos, bytes(payload[pos - seq : s - seq])))
                pos = e
            i += 1
        if pos < end:
            pieces.append((pos, bytes(payload[pos - seq :])))
        for s, chunk in pieces:
            if len(self._starts) >= MAX_OUT_OF_ORDER_CHUNKS:
                return  # drop: the peer retransmits it (RFC 9293 §3.10.7.4 lets us)
            k = bisect.bisect_left(self._starts, s)
            self._starts.insert(k, s)
            self._chunks.insert(k, chunk)
            self.ooo_bytes += len(chunk)

    def _pull_out_of_order(self) -> None:
        while self._starts and self._starts[0] <= self.nxt:
            s = self._starts.pop(0)
            chunk = self._chunks.pop(0)
            self.ooo_bytes -= len(chunk)
            e = s + len(chunk)
            if e > self.nxt:
                self._append(chunk[self.nxt - s :])
                self.nxt = e

    def sack_blocks(self, limit: int = 3) -> list[tuple[int, int]]:
        """Up to ``limit`` blocks of held out-of-order data (RFC 2018 §4).

        The first block is the one holding the most recently received segment; the
        others follow in ascending order.
        """
        if not self._starts:
            return []
        blocks: list[tuple[int, int]] = []
        for s, chunk in zip(self._starts, self._chunks, strict=True):
            e = s + len(chunk)
            if blocks and blocks[-1][1] == s:
                blocks[-1] = (blocks[-1][0], e)
            else:
                blocks.append((s, e))
        last = self._last_chunk_seq
        for k, (s, e) in enumerate(blocks):
            if last is not None and s <= last < e:
                blocks.insert(0, blocks.pop(k))
                break
        return blocks[:limit]


class SackScoreboard:
    """What the peer told us it holds above SND.UNA (RFC 6675 §3, the "scoreboard").

    Kept as sorted, merged ``[start, end)`` ranges, all above SND.UNA.
    """

    __slots__ = ("_ranges", "sacked_bytes")

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []
        self.sacked_bytes = 0

    def __bool__(self) -> bool:
        return bool(self._ranges)

    @property
    def highest(self) -> int | None:
        """The end of the highest SACKed range (RFC 6675 "HighACK" side of the holes)."""
        return self._ranges[-1][1] if self._ranges else None

    def add(self, start: int, end: int) -> None:
        """Record one SACK block (already checked to lie in ``(SND.UNA, SND.MAX]``)."""
        if end <= start:
            return
        ranges = self._ranges
        i = bisect.bisect_left(ranges, [start, start])
        if i > 0 and ranges[i - 1][1] >= start:
            i -= 1
        j = i
        new_start, new_end = start, end
        while j < len(ranges) and ranges[j][0] <= new_end:
            new_start = min(new_start, ranges[j][0])
            new_end = max(new_end, ranges[j][1])
            self.sacked_bytes -= ranges[j][1] - ranges[j][0]
            j += 1
        if i == j and len(ranges) >= MAX_SACK_RANGES:
            return
        ranges[i:j] = [[new_start, new_end]]
        self.sacked_bytes += new_end - new_start

    def acknowledge(self, una: int) -> None:
        """Drop everything below the new SND.UNA."""
        ranges = self._ranges
        while ranges and ranges[0][0] < una:
            s, e = ranges[0]
            if e <= una:
                ranges.pop(0)
                self.sacked_bytes -= e - s
            else:
                ranges[0][0] = una
                self.sacked_bytes -= una - s
                break

    def clear(self) -> None:
        self._ranges.clear()
        self.sacked_bytes = 0

    def is_sacked(self, seq: int) -> bool:
        i = bisect.bisect_right(self._ranges, [seq, float("inf")]) - 1
        return i >= 0 and self._ranges[i][0] <= seq < self._ranges[i][1]

    def next_hole(self, pos: int, limit: int) -> tuple[int, int] | None:
        """The first un-SACKed range ``[s, e)`` with ``pos <= s < limit``, clipped to limit."""
        for s, e in self._ranges:
            if e <= pos:
                continue
            if s <= pos:
                pos = e
                continue
            break
        if pos >= limit:
            return None
        end = limit
        for s, _e in self._ranges:
            if s > pos:
                end = min(end, s)
                break
        return pos, end

    def unsacked_between(self, start: int, end: int) -> int:
        """Bytes in ``[start, end)`` the peer has not SACKed."""
        if end <= start:
            return 0
        covered = 0
        for s, e in self._ranges:
            if e <= start:
                continue
            if s >= end:
                break
            covered += min(e, end) - max(s, start)
        return end - start - covered
