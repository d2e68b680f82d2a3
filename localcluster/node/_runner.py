"""The state of one container of a pod across its runs (what containerStatuses shows)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from localcluster.node import _podspec as ps
from localcluster.node._logs import LogRun
from localcluster.node._process import ContainerProcess


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRunner:
    """The state of one container across its runs (restartCount, last state, logs)."""

    spec: dict[str, Any]
    init: bool
    restart_count: int = 0
    runs: int = 0  # runs started; each run after the first is a restart
    last_event: tuple[str, str] | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "PodInitializing"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    done: bool = False  # terminated and will not restart
    proc: ContainerProcess | None = None
    log_run: LogRun | None = None

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    def status(self) -> dict[str, Any]:
        image = self.spec.get("image", "")
        out: dict[str, Any] = {
            "name": self.name,
            "image": image,
            "imageID": f"{ps.image_repository(image)}@local",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            out["containerID"] = f"tpengine://{self.proc.process.pid}"
        return out
