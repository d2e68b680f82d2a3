"""Client sessions: arrive, keep alive, depart, and expiry of silent clients.

Sans-IO: time is passed in. A session whose client has not been heard from for
``timeout`` seconds is expired; the manager then removes everything it held (its
engagements, its dials), as Telepresence's traffic-manager does for a client that went
away without saying so.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class ClientSession:
    id: str
    user: str
    host: str
    namespace: str
    version: str
    arrived: float
    last_seen: float
    info: dict[str, Any] = field(default_factory=dict)


class SessionRegistry:
    def __init__(self, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._sessions: dict[str, ClientSession] = {}
        self._counter = itertools.count(1)

    def arrive(
        self, *, user: str, host: str, namespace: str, version: str, now: float
    ) -> ClientSession:
        session_id = f"{next(self._counter)}-{secrets.token_hex(6)}"
        session = ClientSession(
            id=session_id,
            user=user,
            host=host,
            namespace=namespace,
            version=version,
            arrived=now,
            last_seen=now,
        )
        self._sessions[session_id] = session
        return session

    def remain(self, session_id: str, now: float) -> bool:
        """Record that the client is alive; False if its session is gone (it must arrive
        again)."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.last_seen = now
        return True

    def depart(self, session_id: str) -> ClientSession | None:
        return self._sessions.pop(session_id, None)

    def get(self, session_id: str) -> ClientSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[ClientSession]:
        return list(self._sessions.values())

    def get_timer(self) -> float | None:
        """When the next silent session expires, if any."""
        if not self._sessions:
            return None
        return min(s.last_seen for s in self._sessions.values()) + self.timeout

    def expire(self, now: float) -> list[ClientSession]:
        gone = [s for s in self._sessions.values() if now >= s.last_seen + self.timeout]
        for session in gone:
            del self._sessions[session.id]
        return gone
