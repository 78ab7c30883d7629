"""Supervision: what a parent keeps of each child, and what it does when one exits (OTP)."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import anyio

from actors import (
    Actor,
    ActorRef,
    Address,
    ChildExit,
    Restart,
    RestartIntensity,
    Strategy,
)

from .._observe.agent_spans import CreatedUnder
from .current import current_cell
from .protocol import Exited

if TYPE_CHECKING:
    from .cell import ActorCell
    from .node import Node

log = logging.getLogger("heterarch.actor")


@dataclasses.dataclass(eq=False)
class ChildRecord:
    """What a parent needs to restart a child: its spec, and the ref it handed out."""

    ref: ActorRef[Any]
    actor_class: type[Actor]
    args: bytes
    name: str
    pool: str
    restart: Restart
    generation: int = 0
    restarts: int = 0
    restarting: bool = False
    removed: bool = False
    failure: BaseException | None = None  # why its last restart failed (the asker gets it)
    created_under: CreatedUnder | None = None  # its create span (tracing on): see agent_spans
    # Made when someone waits for a change (an asker whose child died): an event costs 760
    # bytes, and most children never restart.
    _changed: anyio.Event | None = None

    def mark_changed(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def wait_restarted(self, generation: int) -> None:
        """Wait until an incarnation newer than ``generation`` runs, or the child is gone."""
        while not self.removed and self.generation <= generation:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()


class Supervisor:
    """The supervising half of ``ActorCell`` (a mixin: the cell provides the attributes)."""

    node: Node
    actor: Actor
    address: Address
    parent: Address | None
    children: dict[str, ChildRecord]
    intensity: RestartIntensity
    supervision_lock: anyio.Lock

    if TYPE_CHECKING:
        @property
        def running(self) -> bool: ...
        def fail(self, reason: str, cause: BaseException | None = None) -> None: ...

    async def child_exited(self, exited: Exited, *, counts: bool = True) -> None:
        """Apply this actor's supervisor strategy to a child's exit (outside its mailbox).

        ``counts=False``: part of one event already counted against the restart intensity (the
        loss of a node takes all the children there with it: one event, not one per child).
        """
        async with self.supervision_lock:
            record = self.children.get(exited.actor_id)
            if record is None or record.removed or record.generation != exited.generation:
                return  # stopped by us, or a stale notice from an older incarnation
            if record.restarting:
                return  # we are stopping it ourselves to restart it (one_for_all/rest_for_one)
            action = await self._supervise(record, exited, counts)
        self._notify_child_exit(exited, record, action)

    async def _supervise(self, record: ChildRecord, exited: Exited, counts: bool) -> str:
        if not record.restart.wants_restart(exited.abnormal):
            self._remove_child(record)
            return "stopped"
        if not self.running:
            self._remove_child(record)
            return "stopped"
        if counts and not self.intensity.allow():
            self._remove_child(record)
            self.fail(
                f"restart intensity exceeded ({self.intensity.max_restarts} restarts in "
                f"{self.intensity.period}s; last: child {exited.actor_id} {exited.reason})"
            )
            return "escalated"
        strategy = type(self.actor).supervisor_strategy
        ordered = list(self.children.values())
        if strategy.strategy is Strategy.ONE_FOR_ALL:
            targets = ordered
        elif strategy.strategy is Strategy.REST_FOR_ONE:
            targets = ordered[ordered.index(record) :]
        else:
            targets = [record]
        for target in targets:
            target.restarting = True
        peers = [t for t in targets if t is not record]
        for peer in reversed(peers):
            await self.node.stop_ref(peer.ref, f"restarting ({strategy.strategy.value})")
        # Make sure the incarnation that exited is gone (a no-op when it is; a forged or
        # mistaken exit notice must not leave two incarnations of one actor running).
        await self.node.stop_ref(record.ref, "restarting", generation=exited.generation)
        for target in targets:
            await self._restart(target, strategy.backoff, exited.reason)
        return "restarted"

    async def _restart(self, record: ChildRecord, backoff: Any, reason: str) -> None:
        if backoff is not None:
            await anyio.sleep(backoff.delay(record.restarts))
        record.restarts += 1
        generation = record.generation + 1
        try:
            address = await self.node.spawn_actor(
                record.actor_class,
                record.args,
                pool=record.pool,
                name=record.name,
                parent=self._as_cell(),
                actor_id=record.ref.actor_id,
                generation=generation,
                restart_error=reason,
            )
        except Exception as exc:
            log.warning("restart of %s failed: %s", record.ref.actor_id, exc)
            record.failure = exc
            self._remove_child(record)
            if self.parent is not None:  # a node's guardian has nobody to escalate to
                self.fail(f"could not restart child {record.ref.actor_id}: {exc}", exc)
            return
        if record.removed or not self.running:
            # We stopped (or let the child go) while it was being restarted: our stop could not
            # reach the new incarnation, so stop it now rather than leave it running forever.
            await self.node.stop_ref(self.node.codec.ref(address), "parent stopped")
            return
        record.ref._rebind(address)
        record.generation = generation
        record.restarting = False
        record.mark_changed()

    def _remove_child(self, record: ChildRecord) -> None:
        record.removed = True
        self.children.pop(record.ref.actor_id, None)
        self.node.forget_record(record)
        record.mark_changed()

    def _notify_child_exit(self, exited: Exited, record: ChildRecord, action: str) -> None:
        if type(self.actor).on_child_exit is Actor.on_child_exit:
            return
        info = ChildExit(
            actor_id=exited.actor_id,
            name=record.name,
            reason=exited.reason,
            abnormal=exited.abnormal,
            action=action,
        )
        self.node.task_group.start_soon(self._run_child_exit_hook, info)

    async def _run_child_exit_hook(self, info: ChildExit) -> None:
        token = current_cell.set(self._as_cell())
        try:
            await self.actor.on_child_exit(info)
        except Exception:
            log.exception("on_child_exit of %s raised", self.address.actor_id)
        finally:
            current_cell.reset(token)

    def _as_cell(self) -> ActorCell:
        return self  # type: ignore[return-value]  # Supervisor is only ever part of ActorCell
