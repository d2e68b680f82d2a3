"""``UdpFlow``: one UDP conversation handed to the engine as a datagram channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._udp import UdpFlowState

if TYPE_CHECKING:
    from ._stack import Netstack


class UdpFlow:
    """Datagrams the application sent to ``destination`` from ``source``; replies go back.

    ``receive`` raises ``trio.EndOfChannel`` once the flow expired (idle) or was closed.
    """

    def __init__(self, stack: Netstack, state: UdpFlowState) -> None:
        self._stack = stack
        self._state = state
        key = state.key
        from ._stack import _addr

        self.source = (_addr(key[0]), key[1])
        self.destination = (_addr(key[2]), key[3])
        self._wakeup: trio.Event | None = None

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _expired(self) -> None:
        self._state.closed = True
        self._wake()

    @property
    def dropped(self) -> int:
        """Datagrams dropped because the engine did not read fast enough."""
        return self._state.dropped

    def receive_nowait(self) -> bytes:
        if self._state.inbound:
            return self._state.inbound.popleft()
        if self._state.closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = self.receive_nowait()
            except trio.WouldBlock:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def send(self, data: bytes) -> None:
        """Send a reply datagram to the application."""
        if self._state.closed:
            raise trio.ClosedResourceError("the UDP flow is closed")
        await trio.lowlevel.checkpoint()
        self._stack._send_udp(self._state.key, data)

    def unreachable(self, *, port: bool = True) -> None:
        """Answer the latest datagram with ICMP port (or host) unreachable and end the
        flow: a connected UDP socket in the application sees ECONNREFUSED."""
        packet = self._state.last_packet
        if packet and not self._state.closed:
            self._stack._send_unreachable(packet, port=port)
        self.close()

    def close(self) -> None:
        self._stack._udp.remove(self._state.key)
        self._stack._udp_flows.pop(self._state.key, None)
        self._expired()

    def __aiter__(self) -> UdpFlow:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
