"""The one error the codecs raise on bad input."""

from __future__ import annotations

__all__ = ["MalformedPacket"]


class MalformedPacket(ValueError):
    """The bytes are not a well-formed packet of the expected kind.

    Raised by every ``parse`` in :mod:`tpengine.wire` — and nothing else is: a parser fed
    arbitrary bytes either returns a value or raises this. Receivers drop the packet.
    """
