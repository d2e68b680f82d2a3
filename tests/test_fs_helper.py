"""The helper unmounts only the engine's FUSE mounts; the webhook gives the agent the
app's volumes; the agent's configuration names them."""

from __future__ import annotations

import ctypes
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent._config import ConfigError, load_config
from manager._inject import MOUNTS_ROOT, AgentSpec, agent_patch
from tpengine.helper import _system

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /tmp/telfs-abc rw,nosuid,nodev,relatime shared:60 - fuse.tpengine tpengine rw,user_id=1000,group_id=1000,default_permissions
91 22 0:51 / /tmp/with\\040space rw,relatime - fuse.tpengine tpengine rw,user_id=0,group_id=0
92 22 0:52 / /tmp/covered rw,relatime - fuse.tpengine tpengine rw,user_id=1000,group_id=1000
93 92 0:53 / /tmp/covered rw,relatime - tmpfs tmpfs rw
"""


def test_fuse_owner_reads_the_topmost_mount() -> None:
    assert _system.fuse_owner("/tmp/telfs-abc", MOUNTINFO) == 1000
    assert _system.fuse_owner("/tmp/with space", MOUNTINFO) == 0
    assert _system.fuse_owner("/", MOUNTINFO) is None  # ext4, not FUSE
    assert _system.fuse_owner("/tmp/covered", MOUNTINFO) is None  # a tmpfs on top
    assert _system.fuse_owner("/nowhere", MOUNTINFO) is None


def test_fuse_mount_names_owner_and_device() -> None:
    assert _system.fuse_mount("/tmp/telfs-abc", MOUNTINFO) == (1000, "0:50")
    assert _system.fuse_mount("/tmp/covered", MOUNTINFO) is None


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted on a fresh directory (something mounted that is not FUSE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    target = tmp_path / "tmpfs"
    target.mkdir()
    assert libc.mount(b"tpv", os.fsencode(target), b"tmpfs", 0, None) == 0
    try:
        yield target
    finally:
        libc.umount2(os.fsencode(target), 2)


@pytest.mark.root
def test_the_helper_sets_read_ahead_only_on_fuse_mounts(tmpfs: Path) -> None:
    with pytest.raises(OSError) as refused:
        _system.set_read_ahead(str(tmpfs), 2048, uid=0)
    assert refused.value.errno == errno.EPERM


@pytest.mark.root
def test_the_helper_refuses_to_unmount_what_is_not_fuse(tmpfs: Path) -> None:
    with pytest.raises(OSError) as refused:
        _system.unmount(str(tmpfs), uid=0)
    assert refused.value.errno == errno.EPERM
    assert os.path.ismount(tmpfs)


def test_unmounting_what_is_not_mounted_does_nothing(tmp_path: Path) -> None:
    _system.unmount(str(tmp_path), uid=0)


POD = {
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "web",
                "volumeMounts": [
                    {"name": "settings", "mountPath": "/etc/web", "readOnly": True},
                    {"name": "data", "mountPath": "/var/data/", "subPath": "web"},
                ],
            },
            {"name": "sidecar", "image": "s", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
        ]
    },
}


def test_the_agent_gets_the_app_volumes_under_its_prefix() -> None:
    spec = AgentSpec(
        workload="web", namespace="default", container="web", ports=(), image="i", manager_url="u"
    )
    [agent] = [op["value"] for op in agent_patch(POD, spec) if op["path"] == "/spec/containers/-"]
    assert agent["volumeMounts"] == [
        {"name": "settings", "mountPath": f"{MOUNTS_ROOT}/etc/web", "readOnly": True},
        {
            "name": "data",
            "mountPath": f"{MOUNTS_ROOT}/var/data",
            "readOnly": False,
            "subPath": "web",
        },
    ]
    config = json.loads(next(e["value"] for e in agent["env"] if e["name"] == "TP_AGENT_CONFIG"))
    assert config["mounts"] == [
        {"path": "/etc/web", "ro": True},
        {"path": "/var/data", "ro": False},
    ]
    environ = {"TP_AGENT_CONFIG": json.dumps({**config, "manager_url": "ws://m:1"})}
    assert load_config(environ).mounts == (("/etc/web", True), ("/var/data", False))
    bad = {**config, "manager_url": "ws://m:1", "mounts": [{"path": "relative"}]}
    with pytest.raises(ConfigError, match="mounts"):
        load_config({"TP_AGENT_CONFIG": json.dumps(bad)})
