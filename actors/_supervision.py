"""Supervision, with the semantics of OTP supervisors."""

from __future__ import annotations

import collections
import enum
import random
import time

import msgspec


class Strategy(enum.Enum):
    """What a supervisor does to its other children when one of them dies."""

    ONE_FOR_ONE = "one_for_one"  # restart only the dead child
    ONE_FOR_ALL = "one_for_all"  # stop all children, restart all
    REST_FOR_ONE = "rest_for_one"  # stop the children started after it, restart those and it


class Restart(enum.Enum):
    """When a child is restarted."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit (crash, lost node)
    TEMPORARY = "temporary"  # never

    def wants_restart(self, abnormal: bool) -> bool:
        if self is Restart.PERMANENT:
            return True
        if self is Restart.TRANSIENT:
            return abnormal
        return False


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Backoff between restarts of one child: ``initial * factor**n``, capped, jittered."""

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 5.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


class SupervisorStrategy(msgspec.Struct, frozen=True, kw_only=True):
    """A parent's policy for its children. Set it as the class attribute ``supervisor_strategy``.

    If more than ``max_restarts`` restarts happen within ``period`` seconds the parent gives up:
    it stops all its children and fails itself, escalating to its own parent.
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 3
    period: float = 5.0
    backoff: Backoff | None = None


class RestartIntensity:
    """Sliding-window count of restarts (the OTP intensity/period rule)."""

    def __init__(self, max_restarts: int, period: float) -> None:
        self.max_restarts = max_restarts
        self.period = period
        # Made at the first restart: an empty deque costs 760 bytes, and most actors never
        # restart a child.
        self._stamps: collections.deque[float] | None = None

    def allow(self, now: float | None = None) -> bool:
        """Record one restart; False when it would exceed the limit."""
        now = time.monotonic() if now is None else now
        if self._stamps is None:
            self._stamps = collections.deque()
        while self._stamps and now - self._stamps[0] > self.period:
            self._stamps.popleft()
        if len(self._stamps) >= self.max_restarts:
            return False
        self._stamps.append(now)
        return True
