"""Creating the engine's TUN device (in the helper's network namespace, as root)."""

from __future__ import annotations

import os
from typing import Any

from tpengine.netstack.tun import TunError, create_tun


def open_tun_for_engine(name: str) -> tuple[int, dict[str, Any]]:
    """Create the TUN with IFF_VNET_HDR and every offload the kernel accepts; return a
    descriptor to pass to the engine and what the engine needs to know about it."""
    try:
        device = create_tun(name, vnet_hdr=True, offload=True, uso=True)
    except TunError as exc:
        raise OSError(str(exc)) from None
    fd = os.dup(device.fd)  # the device lives while any descriptor of it is open
    device.close()
    return fd, {"name": device.name, "offloads": device.offloads.flags, "vnet_hdr": True}
