"""Agents that arrived, by pod and by workload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tpengine.tunnel import MuxSession


@dataclass(kw_only=True)
class AgentInfo:
    namespace: str
    workload: str
    pod: str
    pod_ip: str
    container: str
    ports: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentInfo:
        return cls(
            namespace=str(data["namespace"]),
            workload=str(data["workload"]),
            pod=str(data["pod"]),
            pod_ip=str(data.get("pod_ip", "")),
            container=str(data.get("container", "")),
            ports=list(data.get("ports") or []),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        )


@dataclass
class Agent:
    info: AgentInfo
    mux: MuxSession


class AgentRegistry:
    def __init__(self) -> None:
        self._by_pod: dict[tuple[str, str], Agent] = {}

    def arrive(self, info: AgentInfo, mux: MuxSession) -> Agent:
        agent = Agent(info, mux)
        self._by_pod[(info.namespace, info.pod)] = agent
        return agent

    def depart(self, namespace: str, pod: str, mux: MuxSession) -> None:
        agent = self._by_pod.get((namespace, pod))
        if agent is not None and agent.mux is mux:  # a newer tunnel of the same pod stays
            del self._by_pod[(namespace, pod)]

    def get(self, namespace: str, pod: str) -> Agent | None:
        return self._by_pod.get((namespace, pod))

    def of_workload(self, namespace: str, workload: str) -> list[Agent]:
        return [
            a
            for a in self._by_pod.values()
            if (a.info.namespace, a.info.workload) == (namespace, workload)
        ]

    def all(self) -> list[Agent]:
        return list(self._by_pod.values())
