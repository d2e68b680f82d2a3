"""``--mount`` on the command line and ``Volume Mount Point`` in the output."""

from __future__ import annotations

import os

import pytest
import typer

from tpengine.cli._engage_cmd import describe, parse_mount, render_block


def test_mount_values() -> None:
    assert parse_mount(None) == {"path": None, "read_only": False}  # the default: true
    assert parse_mount("true") == {"path": None, "read_only": False}
    assert parse_mount("false") is None
    assert parse_mount("/mnt/x:ro") == {"path": "/mnt/x", "read_only": True}
    # A relative path is the user's, not the engine's working directory's.
    assert parse_mount("here") == {"path": os.path.join(os.getcwd(), "here"), "read_only": False}
    with pytest.raises((SystemExit, typer.Exit)):
        parse_mount(":ro")


def test_the_mount_point_is_shown_as_telepresence_does() -> None:
    engagement = {
        "kind": "intercept",
        "name": "web",
        "state": "ACTIVE",
        "workload_kind": "Deployment",
    }
    mounted = render_block(describe({**engagement, "mount_point": "/tmp/telfs-1"}))
    assert "   Volume Mount Point: /tmp/telfs-1" in mounted.splitlines()
    failed = render_block(describe({**engagement, "mount_error": "no FUSE"}))
    assert "Volume Mount Error: no FUSE" in failed
