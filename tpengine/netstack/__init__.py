"""tpengine.netstack: a userspace TCP/UDP stack for the TUN device.

The sans-IO core (``TcpEndpoint``, ``UdpFlowTable``) and the trio driver
(``open_netstack``) that reads the TUN, terminates every connection the kernel opens
towards it and hands each to the engine as a trio stream. How the engine uses it::

    async with open_tun(...) as tun, open_netstack(tun, pcap=None) as stack:
        async for pending in stack.pending_connections():     # one per new SYN
            host, port = pending.destination                  # the original destination
            ...                                                # try the cluster side
            stream = await pending.accept()   # handshake completes: a HalfCloseableStream
            # or: pending.refuse()            # the app sees ECONNREFUSED (RST)
            # or: pending.unreachable()       # ICMP host (port=True: port) unreachable
        async for flow in stack.udp_flows():                   # one per new 5-tuple
            flow.destination; await flow.receive(); await flow.send(reply)
            # or: flow.unreachable()          # ICMP port unreachable; idle flows expire

``TcpStream`` raises only trio's resource errors: ``BrokenResourceError`` after a reset
(RST either way, retransmission or keepalive timeout), ``ClosedResourceError`` after our
own ``aclose``/``send_eof``. ``stream.abort()`` resets. Closing the stack resets every
connection still open. Nothing here knows about Kubernetes.
"""

from tpengine.wire._compiled import select_build

#: Whether this process runs the mypyc build of the sans-IO core (``./dev`` compiles
#: it, see ``tpengine/wire/_build.py``; a build older than the sources is set aside).
COMPILED: bool = select_build(__name__, __path__[0])

# ruff: noqa: E402  (the build is chosen before any module of the package is imported)

from ._config import TcpConfig
from ._device import NetstackStats
from ._errors import LocalProtocolError, ProtocolViolation
from ._events import (
    Closed,
    ConnectionReset,
    Established,
    Event,
    Readable,
    RemoteClosed,
    Writable,
)
from ._segment import ACK, FIN, PSH, RST, SYN, URG, TcpSegment, reset_for
from ._stack import Connection, Netstack, NetstackConfig, PendingConnection, open_netstack
from ._state import TcpState
from ._stream import TcpStream
from ._tcp import TcpEndpoint
from ._udp import UdpFlowTable
from ._udp_flow import UdpFlow

__all__ = [
    "ACK",
    "COMPILED",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "Closed",
    "ConnectionReset",
    "Established",
    "Event",
    "Connection",
    "LocalProtocolError",
    "Netstack",
    "NetstackConfig",
    "NetstackStats",
    "PendingConnection",
    "ProtocolViolation",
    "Readable",
    "RemoteClosed",
    "TcpConfig",
    "TcpEndpoint",
    "TcpSegment",
    "TcpState",
    "TcpStream",
    "UdpFlow",
    "UdpFlowTable",
    "Writable",
    "open_netstack",
    "reset_for",
]
