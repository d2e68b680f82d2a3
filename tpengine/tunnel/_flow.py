"""Connection-level receive accounting.

Two limits bound what a receiver holds (no unbounded buffering anywhere):

* the connection window bounds bytes *in transit* — sent by the peer, not yet credited
  back;
* the receive budget bounds bytes *delivered to streams and not yet read* by the
  application, summed over all streams.

Connection credit for a DATA frame is returned as soon as it reaches its stream, while
the unread total stays within the budget: a stalled reader then holds only its own stream
window and never connection credit, so it stalls nobody else. Past the budget (many
stalled readers at once) credit for the excess is withheld until the application reads,
as in HTTP/2: the connection slows down instead of memory growing. At most
``budget + connection_window`` bytes are ever buffered for the application.
"""

from __future__ import annotations

from ._errors import FlowControlViolation


class ReceiveWindow:
    def __init__(self, window: int, budget: int) -> None:
        self.window = window
        self.budget = budget
        self.remaining = window  # what the peer may still send before our next update
        self.unacked = 0  # credit earned, not yet sent in a WINDOW_UPDATE
        self.withheld = 0  # credit held back while the unread total exceeds the budget
        self.unread: dict[int, int] = {}
        self.unread_total = 0

    def on_data(self, sid: int, n: int, *, delivered: bool) -> None:
        if n > self.remaining:
            raise FlowControlViolation("peer exceeded the connection window")
        self.remaining -= n
        if delivered and n:
            self.unread[sid] = self.unread.get(sid, 0) + n
            self.unread_total += n
        self._rebalance(n)

    def consumed(self, sid: int, n: int) -> None:
        """The application read (or dropped) ``n`` bytes of ``sid``."""
        n = min(n, self.unread.get(sid, 0))
        if n:
            left = self.unread[sid] - n
            if left:
                self.unread[sid] = left
            else:
                del self.unread[sid]
            self.unread_total -= n
            self._rebalance(0)

    def forget(self, sid: int) -> None:
        self.consumed(sid, self.unread.get(sid, 0))

    def take_update(self) -> int:
        """The increment to announce now (batched to a quarter window), or 0."""
        if self.unacked < max(1, self.window // 4):
            return 0
        increment, self.unacked = self.unacked, 0
        self.remaining += increment
        return increment

    def _rebalance(self, arrived: int) -> None:
        target = max(0, self.unread_total - self.budget)
        self.unacked += arrived + self.withheld - target
        self.withheld = target
