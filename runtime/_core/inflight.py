"""Requests waiting for an answer, grouped by the node that hosts their target.

The loss of that node fails them (``lost``: the asker then waits for the restart); a reconnect,
ours or the target node's, interrupts them to be sent again (``resend``): a message published
around a broker outage may never arrive, and the target answers a request id only once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio


class Waiting:
    """One request in flight: the scope that waits for its answer, and why it was interrupted."""

    __slots__ = ("lost", "resend", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.lost = False
        self.resend = False


class InFlight:
    def __init__(self) -> None:
        self._by_node: dict[str, set[Waiting]] = {}

    @contextlib.contextmanager
    def waiting_on(self, node_id: str) -> Iterator[Waiting]:
        """Wait inside the returned ``Waiting.scope``; afterwards its flags say why it ended."""
        waiting = Waiting()
        group = self._by_node.setdefault(node_id, set())
        group.add(waiting)
        try:
            with waiting.scope:
                yield waiting
        finally:
            group.discard(waiting)
            if not group and self._by_node.get(node_id) is group:
                del self._by_node[node_id]

    def node_lost(self, node_id: str) -> None:
        for waiting in self._by_node.pop(node_id, set()):
            waiting.lost = True
            waiting.scope.cancel()

    def resend(self, node_id: str | None = None) -> int:
        """Interrupt the requests to ``node_id`` (all when None) so they are sent again."""
        groups = list(self._by_node.values()) if node_id is None else [
            self._by_node.get(node_id, set())]
        count = 0
        for group in groups:
            for waiting in group:
                if not waiting.lost:
                    waiting.resend = True
                    waiting.scope.cancel()
                    count += 1
        return count
