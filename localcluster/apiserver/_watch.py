"""Watch fan-out and the change history that lets a watcher resume from a resourceVersion.

Changes are recorded in resourceVersion order; a watcher resuming from version v gets
every recorded change after v, or 410 Gone when v is older than the oldest kept change
(etcd compaction). A change that moves an object into or out of a watcher's selection is
an ADDED or DELETED for that watcher (apiserver/pkg/storage/cacher). A watcher that falls
``WATCH_QUEUE_LIMIT`` events behind is closed, as a real API server drops slow watchers;
its client re-lists.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ._errors import Gone
from ._selectors import Matcher

WATCH_QUEUE_LIMIT = 20_000


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    type: str  # "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK"
    object: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Change:
    rv: int
    resource: str
    type: str
    object: dict[str, Any]
    old: dict[str, Any] | None


@dataclass(eq=False, kw_only=True)
class _Watcher:
    resource: str
    namespace: str | None
    matches: Matcher
    send: trio.MemorySendChannel[WatchEvent]
    receive: trio.MemoryReceiveChannel[WatchEvent]
    closed: bool = False

    def deliver(self, change: Change) -> None:
        if self.closed:
            return
        meta = change.object.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return
        now_in = self.matches(change.object)
        was_in = change.old is not None and self.matches(change.old)
        kind = change.type
        if kind == "MODIFIED":
            if now_in and not was_in:
                kind = "ADDED"
            elif was_in and not now_in:
                kind = "DELETED"
            elif not now_in:
                return
        elif not now_in:
            return
        if self.receive.statistics().current_buffer_used >= WATCH_QUEUE_LIMIT:
            self.closed = True
            self.send.close()
            return
        self.send.send_nowait(WatchEvent(type=kind, object=copy.deepcopy(change.object)))


@dataclass(eq=False)
class WatchHub:
    compacted: int = 0  # the newest version no longer in the history
    history: deque[Change] = field(default_factory=deque)
    watchers: set[_Watcher] = field(default_factory=set)

    def record(self, change: Change, *, limit: int) -> None:
        self.history.append(change)
        while len(self.history) > limit:
            self.compacted = self.history.popleft().rv
        for watcher in list(self.watchers):
            if watcher.resource == change.resource:
                watcher.deliver(change)

    @asynccontextmanager
    async def open(
        self,
        resource: str,
        namespace: str | None,
        matches: Matcher,
        *,
        since: int | None,
        snapshot: list[dict[str, Any]],
    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Events after ``since``; with ``since=None`` the snapshot comes first as ADDED."""
        send, receive = trio.open_memory_channel[WatchEvent](math.inf)
        watcher = _Watcher(
            resource=resource, namespace=namespace, matches=matches, send=send, receive=receive
        )
        if since is None:
            for obj in snapshot:
                if matches(obj):
                    send.send_nowait(WatchEvent(type="ADDED", object=obj))
        else:
            if since < self.compacted:
                raise Gone(f"too old resource version: {since} ({self.compacted + 1})")
            for change in self.history:
                if change.rv > since and change.resource == resource:
                    watcher.deliver(change)
        self.watchers.add(watcher)
        try:
            yield receive
        finally:
            self.watchers.discard(watcher)
            send.close()
            receive.close()
