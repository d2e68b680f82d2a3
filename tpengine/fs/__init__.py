"""tpengine.fs — an engaged container's volumes on the laptop (FUSE), and the compact
file protocol the engine and the traffic-agent speak for them (``_protocol``)."""

from tpengine.fs._client import VolumeClient
from tpengine.fs._mount import MountError, VolumeMount, VolumeMounts
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

__all__ = [
    "VOLUMES_HOST",
    "VOLUMES_PORT",
    "Attr",
    "FrameDecoder",
    "MountError",
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
