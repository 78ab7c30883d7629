"""The asks an actor has taken, by request id, so that a re-sent ask runs its handler once.

An asker re-sends an ask (same ``correlation_id``) when a reconnect may have lost it or its
reply. A copy that arrives while the first is queued or running only adds its reply subject; one
that arrives after the answer gets the same answer again. The answers kept are bounded.
"""

from __future__ import annotations

import collections
import enum

from transports import Envelope


class Admission(enum.Enum):
    NEW = "new"  # queue it
    JOINED = "joined"  # the same request is queued or running: answered with it
    ANSWERED = "answered"  # answered already: send ``answer_of`` again


class TakenAsks:
    def __init__(self, keep: int = 512) -> None:
        self.keep = keep
        self._open: dict[str, list[str]] = {}  # request id -> reply subjects of re-sent copies
        self._answers: collections.OrderedDict[str, Envelope] = collections.OrderedDict()

    def admit(self, env: Envelope) -> Admission:
        request_id = env.correlation_id
        if not request_id:
            return Admission.NEW
        if request_id in self._answers:
            return Admission.ANSWERED
        joined = self._open.get(request_id)
        if joined is None:
            self._open[request_id] = []
            return Admission.NEW
        if env.reply_to:
            joined.append(env.reply_to)
        return Admission.JOINED

    def answer_of(self, env: Envelope) -> Envelope:
        return self._answers[env.correlation_id]

    def answered(self, env: Envelope, answer: Envelope | None) -> list[str]:
        """Record the answer to ``env``; return the reply subjects of its re-sent copies."""
        joined = self._open.pop(env.correlation_id, [])
        if answer is not None and env.correlation_id:
            self._answers[env.correlation_id] = answer
            while len(self._answers) > self.keep:
                self._answers.popitem(last=False)
        return joined

    def dropped(self, env: Envelope) -> None:
        """``env`` will never be answered here (rejected): forget it."""
        self._open.pop(env.correlation_id, None)
