"""How long a sub-call may take: derived from the work, so that a lost reply fails soon.

A model call on a pool takes at most ``(max_retries + 1) * timeout_s`` plus the client's
backoffs (or the provider's Retry-After, up to ``RETRY_AFTER_MAX_S``) between attempts (the
pool's ``LLMClient`` enforces ``timeout_s`` per attempt). A lane
runs a chunk's prompts concurrently within the pool's ``max_concurrency``, so a chunk (with the
other chunks of its batch that may share the lane's worker) takes at most as many of those as
the prompts in flight fill waves of ``max_concurrency``. A child agent takes at most its
iterations, each one model call and one cell (``cell_timeout_s``), plus its sandbox's start,
and no longer than its wall budget allows (plus the call and cell it is in when the budget
runs out). Each figure gets a margin (``MARGIN_FACTOR`` and ``MARGIN_S``) for the messages,
queues and spawns around it. Without a pool's config the old ceilings apply.
"""

from __future__ import annotations

import math

from ._ports import PoolInfo

#: The pool client's first retry delay (doubled each retry; jitter up to 1.5 times it).
BACKOFF_S = 0.2
#: The longest Retry-After the pool client waits before a retry (``RETRY_AFTER_MAX_S`` there).
RETRY_AFTER_MAX_S = 10.0
MARGIN_FACTOR = 1.25
MARGIN_S = 10.0
#: The sandbox prelude and the context load (their own exec timeouts in ``_rlm``).
SANDBOX_START_S = 150.0
#: Without a pool's config: the ceilings used before timeouts were derived.
FALLBACK_CALL_S = 600.0
FALLBACK_CHILD_S = 3600.0


def with_margin(seconds: float) -> float:
    return seconds * MARGIN_FACTOR + MARGIN_S


def model_call_s(pool: PoolInfo | None) -> float | None:
    """The longest one model call on ``pool`` takes, retries included (None: unknown)."""
    if pool is None or not pool.model:
        return None
    retries = max(0, pool.max_retries)
    backoffs = float(sum(max(BACKOFF_S * 2 ** k * 1.5, RETRY_AFTER_MAX_S)
                         for k in range(retries)))
    return pool.timeout_s * (retries + 1) + backoffs


def prompts_timeout(pool: PoolInfo | None, in_flight: int = 1) -> float:
    """The ask timeout of ``in_flight`` prompts run together on ``pool`` (a chunk and the
    chunks beside it, or one prompt)."""
    call = model_call_s(pool)
    if call is None:
        return FALLBACK_CALL_S if in_flight <= 1 else FALLBACK_CHILD_S
    assert pool is not None  # a call time is known only for a pool
    waves = math.ceil(max(1, in_flight) / max(1, pool.max_concurrency))
    return with_margin(waves * call)


def child_timeout(pool: PoolInfo | None, *, max_iterations: int, cell_timeout_s: float,
                  wall_s: float = 0.0) -> float:
    """The ask timeout of a child agent on ``pool``; ``wall_s``: its wall budget (0: none)."""
    call = model_call_s(pool)
    if call is None:
        work = FALLBACK_CHILD_S
    else:
        iteration = call + cell_timeout_s
        work = SANDBOX_START_S + max(1, max_iterations) * iteration
        if wall_s:
            work = min(work, wall_s + iteration)
    return with_margin(work)
