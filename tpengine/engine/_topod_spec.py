"""``--to-pod`` port specs, parsed by the CLI and served by :mod:`tpengine.engine._topod`."""

from __future__ import annotations

from dataclasses import dataclass


class ToPodError(Exception):
    """A ``--to-pod`` port that cannot be served (bad spec, or the local port is taken)."""


@dataclass(frozen=True, kw_only=True)
class ToPodPort:
    port: int
    protocol: str = "TCP"

    @classmethod
    def parse(cls, text: str) -> ToPodPort:
        """``PORT``, ``PORT/TCP`` or ``PORT/UDP`` (Telepresence's ``--to-pod`` syntax)."""
        number, _, proto = str(text).partition("/")
        proto = (proto or "TCP").upper()
        if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("TCP", "UDP"):
            raise ToPodError(f"--to-pod {text}: give PORT, PORT/TCP or PORT/UDP (1-65535)")
        return cls(port=int(number), protocol=proto)

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"
