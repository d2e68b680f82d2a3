"""tpengine.fs — an engaged container's volumes on the laptop (FUSE), and the compact
file protocol the engine and the traffic-agent speak for them (``_protocol``).

The FUSE parts (``VolumeMounts``: in this process; ``MountProcesses``: one child process
per mount, what the engine uses) load pyfuse3 on first use only, so the agent, which
serves the protocol, never needs libfuse."""

from typing import TYPE_CHECKING, Any

from tpengine.fs._client import VolumeClient
from tpengine.fs._protocol import (
    VOLUMES_HOST,
    VOLUMES_PORT,
    Attr,
    FrameDecoder,
    Op,
    ProtocolViolation,
    Reply,
    Request,
    StatFs,
    encode_reply,
    encode_request,
)

if TYPE_CHECKING:
    from tpengine.fs._mount import MountError, VolumeMount, VolumeMounts
    from tpengine.fs._process import MountProcesses

__all__ = [
    "VOLUMES_HOST",
    "VOLUMES_PORT",
    "Attr",
    "FrameDecoder",
    "MountError",
    "MountProcesses",
    "Op",
    "ProtocolViolation",
    "Reply",
    "Request",
    "StatFs",
    "VolumeClient",
    "VolumeMount",
    "VolumeMounts",
    "encode_reply",
    "encode_request",
]


def __getattr__(name: str) -> Any:
    if name in ("MountError", "VolumeMount", "VolumeMounts"):
        from tpengine.fs import _mount

        return getattr(_mount, name)
    if name == "MountProcesses":
        from tpengine.fs import _process

        return _process.MountProcesses
    raise AttributeError(name)
