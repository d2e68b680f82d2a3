"""IPv4 fragment reassembly (RFC 791 §3.2, RFC 815), sans-IO and bounded.

TCP never needs it (the kernel sets DF and sizes segments to the MTU), but a UDP
datagram larger than the TUN's MTU leaves the kernel as IP fragments. Fragments are
collected per (source, destination, protocol, identification); a datagram is handed
on once the fragment without More-Fragments has arrived and the pieces cover it with
no hole. Memory is bounded: at most ``max_datagrams`` in progress (the oldest is
dropped), each at most 65,535 bytes, each for at most ``timeout`` seconds (RFC 791
suggests 15 s as the reassembly timer's lower bound; Linux uses 30 s).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

FragmentKey = tuple[bytes, bytes, int, int]  # (source, destination, protocol, id)
_MAX_DATAGRAM = 65535 - 20


@dataclass(eq=False)
class _Partial:
    deadline: float
    pieces: dict[int, bytes] = field(default_factory=dict)  # offset (bytes) -> data
    total: int | None = None  # payload length, known once the last fragment arrived
    first_packet: bytes = b""  # the offset-0 fragment, to quote in an ICMP error
    size: int = 0


class FragmentReassembler:
    def __init__(self, *, max_datagrams: int = 64, timeout: float = 30.0) -> None:
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self._partials: OrderedDict[FragmentKey, _Partial] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._partials)

    def add(
        self,
        key: FragmentKey,
        offset: int,
        more: bool,
        data: bytes,
        packet: bytes,
        now: float,
    ) -> tuple[bytes, bytes] | None:
        """One fragment (``offset`` in bytes). Returns ``(payload, first_fragment)`` when
        the datagram is complete, else None."""
        self._expire(now)
        partial = self._partials.get(key)
        if partial is None:
            if len(self._partials) >= self.max_datagrams:
                self._partials.popitem(last=False)  # the oldest goes: memory stays bounded
                self.dropped += 1
            partial = self._partials[key] = _Partial(deadline=now + self.timeout)
        end = offset + len(data)
        if end > _MAX_DATAGRAM or (partial.total is not None and end > partial.total):
            del self._partials[key]  # impossible geometry: drop the datagram
            self.dropped += 1
            return None
        if not more:
            if partial.total is not None and partial.total != end:
                del self._partials[key]
                self.dropped += 1
                return None
            partial.total = end
        if offset == 0:
            partial.first_packet = packet
        if offset not in partial.pieces:
            partial.pieces[offset] = data
            partial.size += len(data)
        return self._complete(key, partial)

    def _complete(self, key: FragmentKey, partial: _Partial) -> tuple[bytes, bytes] | None:
        if partial.total is None or partial.size < partial.total:
            return None
        out = bytearray(partial.total)
        covered = 0
        for offset in sorted(partial.pieces):
            piece = partial.pieces[offset]
            if offset > covered:
                return None  # a hole (overlaps made size look complete): wait for more
            out[offset : offset + len(piece)] = piece
            covered = max(covered, offset + len(piece))
        if covered < partial.total:
            return None
        del self._partials[key]
        return bytes(out), partial.first_packet

    def _expire(self, now: float) -> None:
        while self._partials:
            key, oldest = next(iter(self._partials.items()))
            if oldest.deadline > now:
                return
            del self._partials[key]
            self.dropped += 1
