"""Hard budgets: every model call and child agent reserves its estimate before it is sent.

A run's ``Budget`` (tokens, dollars, wall seconds) is checked against what was spent plus what
is reserved by calls in flight. A call is dispatched only if its estimate (prompt tokens, plus
``max_tokens`` or the most this pool has written so far, priced at the pool's rates) still
fits; afterwards its reservation is released and its real usage counts. So a batch of any
size stops at the budget and overshoots only by what the calls in flight wrote beyond their
estimates. A child agent reserves its share of what is left and is given that share as its
own budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BudgetExceeded
from ._messages import Budget

DEFAULT_OUTPUT_TOKENS = 1024  # before a pool's first answer, without max_tokens
CHAT_OVERHEAD_TOKENS = 8  # role markers and the like, per request


def estimate_prompt_tokens(text: str) -> int:
    """About four characters a token, rounded up, plus the chat's own overhead."""
    return math.ceil(len(text) / 4) + CHAT_OVERHEAD_TOKENS


@dataclass(frozen=True)
class Reservation:
    tokens: int
    dollars: float
    calls: int = 0


class Ledger:
    """Spent, reserved and left of one run's ``Budget``.

    ``spent`` returns the run's usage so far (tokens, dollars); ``prices`` a pool's dollars
    per million input and output tokens (or ``(0, 0)`` when unknown).
    """

    def __init__(self, budget: Budget, *, spent: Callable[[], tuple[int, float]],
                 prices: Callable[[str], tuple[float, float]],
                 started: float | None = None,
                 calls: Callable[[], int] = lambda: 0) -> None:
        self.budget = budget
        self._spent = spent
        self._calls = calls  # model calls made so far (lost ones too)
        self.reserved_calls = 0
        self._prices = prices
        self.started = time.monotonic() if started is None else started
        self.reserved_tokens = 0
        self.reserved_dollars = 0.0
        self.exhausted: BudgetExceeded | None = None  # the first refusal, if any
        self._longest_answer: dict[str, int] = {}

    @property
    def limited(self) -> bool:
        b = self.budget
        return bool(b.tokens or b.dollars or b.wall_s or b.calls)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def estimate(self, pool: str, prompt: str, max_tokens: int | None) -> Reservation:
        """What one call of ``prompt`` on ``pool`` may cost at most, as far as we know."""
        prompt_tokens = estimate_prompt_tokens(prompt)
        output = max_tokens or self._longest_answer.get(pool, DEFAULT_OUTPUT_TOKENS)
        price_in, price_out = self._prices(pool)
        return Reservation(prompt_tokens + output,
                           (prompt_tokens * price_in + output * price_out) / 1e6, calls=1)

    def reserve(self, want: Reservation, *, seconds: float = 0.0) -> Reservation:
        """Reserve ``want``, or raise ``BudgetExceeded`` (and remember it) if it does not fit
        in what is left. ``seconds``: how long the call is expected to take."""
        b = self.budget
        tokens, dollars = self._spent()
        if b.tokens and tokens + self.reserved_tokens + want.tokens > b.tokens:
            self._refuse("tokens", tokens + self.reserved_tokens, b.tokens)
        if b.dollars and dollars + self.reserved_dollars + want.dollars > b.dollars:
            self._refuse("dollars", dollars + self.reserved_dollars, b.dollars)
        if b.wall_s and self.elapsed() + seconds > b.wall_s:
            self._refuse("wall seconds", self.elapsed(), b.wall_s)
        if b.calls and want.calls and self._calls() + self.reserved_calls + want.calls > b.calls:
            self._refuse("calls", self._calls() + self.reserved_calls, b.calls)
        self.reserved_calls += want.calls
        self.reserved_tokens += want.tokens
        self.reserved_dollars += want.dollars
        return want

    def settle(self, held: Reservation, *, pool: str = "", output_tokens: int = 0) -> None:
        """Release ``held`` (its real usage is in the run's usage by now)."""
        self.reserved_tokens -= held.tokens
        self.reserved_dollars -= held.dollars
        self.reserved_calls -= held.calls
        if pool and output_tokens > self._longest_answer.get(pool, 0):
            self._longest_answer[pool] = output_tokens

    def share(self, ways: int) -> Budget:
        """One of ``ways`` equal shares of what is left (for child agents)."""
        b = self.budget
        tokens, dollars = self._spent()
        ways = max(1, ways)
        return Budget(
            tokens=max(1, (b.tokens - tokens - self.reserved_tokens) // ways) if b.tokens else 0,
            dollars=max(1e-9, (b.dollars - dollars - self.reserved_dollars) / ways)
            if b.dollars else 0.0,
            wall_s=max(0.001, b.wall_s - self.elapsed()) if b.wall_s else 0.0,
            calls=max(1, (b.calls - self._calls() - self.reserved_calls) // ways)
            if b.calls else 0,
        )

    def check(self) -> None:
        """Raise ``BudgetExceeded`` if a call was refused or a limit is reached."""
        if self.exhausted is not None:
            raise self.exhausted
        b = self.budget
        tokens, dollars = self._spent()
        if b.tokens and tokens >= b.tokens:
            self._refuse("tokens", tokens, b.tokens)
        if b.dollars and dollars >= b.dollars:
            self._refuse("dollars", dollars, b.dollars)
        if b.wall_s and self.elapsed() >= b.wall_s:
            self._refuse("wall seconds", self.elapsed(), b.wall_s)
        if b.calls and self._calls() >= b.calls:
            self._refuse("calls", self._calls(), b.calls)

    def stop_reason(self, exc: BudgetExceeded) -> str:
        """Which budget stopped the run, and how much was spent of it in the end."""
        tokens, dollars = self._spent()
        spent = {"tokens": f"{tokens:,}", "dollars": f"${dollars:.6g}",
                 "wall seconds": f"{self.elapsed():.3g}",
                 "calls": str(self._calls())}.get(exc.what, f"{exc.used:.6g}")
        limit = f"${exc.limit:.6g}" if exc.what == "dollars" else f"{exc.limit:,.6g}"
        return f"budget: {exc.what} budget exhausted: spent {spent} of {limit}"

    def fraction_left(self) -> float:
        b = self.budget
        tokens, dollars = self._spent()
        fractions = [1.0]
        if b.tokens:
            fractions.append(1 - (tokens + self.reserved_tokens) / b.tokens)
        if b.dollars:
            fractions.append(1 - (dollars + self.reserved_dollars) / b.dollars)
        return max(0.0, min(fractions))

    def _refuse(self, what: str, used: float, limit: float) -> None:
        exc = BudgetExceeded(what, used, limit)
        if self.exhausted is None:
            self.exhausted = exc
        raise exc
