"""The sub-calls of an RLM run: ``llm_query`` and ``llm_query_batched`` from the sandbox.

Each prompt is routed (the code's pool, the run's override, or the router), reserved against
the budget, and sent to a lane of its pool (``Lanes``); a batch goes to each pool in chunks.
A call that fails goes to another pool (up to three), unless the code or the run named one; an
answer that fails the code's ``escalate_if`` check goes to a stronger pool (the cascade).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
from opentelemetry import trace

from ..errors import ActorDead, AskTimeout, BudgetExceeded, InvalidImage
from ._budget import Reservation
from ._images import store_wire_images
from ._lanes import Lanes
from ._llm_agent import LLMAgent
from ._messages import ImageRef, LLMReply, PoolUsage, Prompt, PromptOutcome, merge_usage
from ._ports import BlobStore
from ._state import RunState, item_error
from ._timeouts import prompts_timeout


class SubCalls:
    """The plain sub-calls of one run, on lanes of ``LLMAgent`` per pool."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        pools = run.pools

        def limit_of(pool: str) -> int:
            config = pools.get(pool)
            limit = config.max_concurrency if config is not None else 16
            return min(limit, run.lanes_per_pool)

        def timeout_of(pool: str, in_flight: int) -> float:
            return prompts_timeout(pools.get(pool), in_flight)

        self.lanes = Lanes(run.ctx, LLMAgent, limit_of=limit_of, timeout_of=timeout_of)

    async def llm_query(self, prompt: str, images: Any = None, **options: Any) -> str:
        """``images``: as the REPL helpers send them; checked and put in the blob store."""
        with self.run.tool_span("llm_query", images=len(images or ())):
            return await self.sub_llm(str(prompt), options, images)

    async def llm_query_batched(
        self, prompts: list[str], pools: list[str] | None = None, images: Any = None,
        **options: Any
    ) -> list[str]:
        """``pools`` (optional) names a pool per prompt; else ``pool=`` or the router decides.
        ``images`` (optional): one list of images per prompt."""
        if pools is not None and len(pools) != len(prompts):
            raise ValueError("llm_query_batched needs one pool per prompt in `pools`")
        if images is not None and (not isinstance(images, list) or len(images) != len(prompts)):
            raise InvalidImage("llm_query_batched needs one list of images per prompt")
        per_prompt = [dict(options, pool=pools[i]) if pools else options
                      for i in range(len(prompts))]
        if images is None:
            with self.run.tool_span("llm_query_batched", batch=len(prompts)):
                return await self._reported_batch([str(p) for p in prompts], per_prompt)
        blobs = self.run.services.blobs
        stored: list[list[ImageRef]] = []
        try:  # every image is checked and stored before any prompt goes out
            for items in images:
                stored.append(await store_wire_images(blobs, items))
            with self.run.tool_span("llm_query_batched", batch=len(prompts),
                                 images=sum(len(refs) for refs in stored)):
                return await self._reported_batch([str(p) for p in prompts], per_prompt,
                                                  stored)
        finally:  # the images lived for this batch
            with anyio.CancelScope(shield=True):
                await _delete_images(blobs, [ref for refs in stored for ref in refs])

    async def _reported_batch(self, prompts: list[str], options: list[dict[str, Any]],
                              images: list[list[ImageRef]] | None = None) -> list[str]:
        """``_batched``, with the live view told as sub-calls finish (every half second at
        most, while the batch runs), then when all are done."""
        run = self.run
        base = run.sub_calls_done
        run.sub_calls_started += len(prompts)
        if run.query.progress is None:
            results = await self._batched(prompts, options, images)
        else:
            failure: Exception | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(run.report_sub_calls)
                try:
                    results = await self._batched(prompts, options, images)
                except Exception as exc:  # raised below, outside the task group
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
            if failure is not None:
                raise failure
        run.sub_calls_done = base + len(prompts)
        await run.report(f"sub-calls {run.sub_calls_done} of {run.sub_calls_started} done")
        return results

    async def _batched(self, prompts: list[str], options: list[dict[str, Any]],
                       images: list[list[ImageRef]] | None = None,
                       paid: dict[int, tuple[str, PoolUsage]] | None = None) -> list[str]:
        """Route each prompt, then send each pool its share in chunks (``Lanes.run_batch``).
        Prompts that no lane answered, or whose model call failed, go one by one
        (``_sub_llm_refs``: another pool, unless the code or the run named one). With the
        run's call cache, a prompt repeated in the batch is sent once (``_once``). ``paid``
        gets, per prompt answered in its chunk, the pool and what its call cost."""
        if images is None and self.run.cache_scope and paid is None:
            repeats = _repeats(prompts, options)
            if repeats is not None:
                return await self._once(prompts, options, repeats)
        self.run.check_budget()
        results = [""] * len(prompts)
        by_pool: dict[str, list[int]] = {}
        held: dict[int, Reservation] = {}
        reasons: list[str] = []
        pictures = images or [[] for _ in prompts]
        for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            try:
                pool, reason = self.route(prompt, "llm", dict(opts), set(), pictures[i])
            except LookupError as exc:  # PromptTooLong (fits no pool's window): this item's
                reasons.append("")     # own error, at once; the batch goes on
                results[i] = item_error(exc)
                continue
            reasons.append(reason)
            try:  # reserved before dispatch: past the budget, the prompt is not sent
                held[i] = self.run.reserve(pool, prompt, opts.get("max_tokens"))
            except BudgetExceeded as exc:
                results[i] = item_error(exc)
                continue
            by_pool.setdefault(pool, []).append(i)
        span = trace.get_current_span()
        if span.is_recording():  # where the router sent the batch; each sub-call's span: why
            span.set_attribute("heterarch.route.planned",
                               [f"{pool}={len(ix)}" for pool, ix in by_pool.items()])
        stats = self.run.stats()
        served: dict[str, int] = {}     # where each prompt was answered in the end
        failures: dict[tuple[str, str], int] = {}  # (pool, error type) -> prompts

        async def pool_share(pool: str, indices: list[int]) -> None:
            sent = time.monotonic()
            self.run.sub_call_sent(pool, len(indices))
            for _ in indices:
                if stats is not None:
                    stats.started(pool)

            arrived: list[PromptOutcome] = []

            def finished(outcome: PromptOutcome) -> None:
                arrived.append(outcome)
                self.run.sub_call_finished(pool)
                if outcome.reply is not None:
                    self.run.sub_calls_done += 1
                if stats is not None:
                    stats.finished(pool, time.monotonic() - sent, outcome.reply is not None)

            try:
                outcomes = await self.lanes.run_batch(
                    pool, [prompts[i] for i in indices], on_lane=self.run.count_agent,
                    on_outcome=finished, max_tokens=options[indices[0]].get("max_tokens"),
                    reasons=[reasons[i] for i in indices],
                    images=[pictures[i] for i in indices] if images else (),
                    cache_scope=self.run.cache_scope,
                    cache_across_runs=self.run.query.cache_across_runs,
                    cache_owner=self.run.cache_owner(uuid.uuid4().hex)
                    if self.run.cache_scope else "",
                    on_lost=lambda j, n: self.run.lost(
                        pool, prompts[indices[j]], options[indices[j]].get("max_tokens"), n),
                    on_cancelled=lambda j, n: self.run.lost(
                        pool, prompts[indices[j]], options[indices[j]].get("max_tokens"), n,
                        cancelled=True))
            except anyio.get_cancelled_exc_class():
                for done in arrived:  # answered before the stop: spent, so counted
                    if done.reply is not None:
                        merge_usage(self.run.usage, done.reply.usage)
                raise
            if stats is not None:  # prompts no lane answered are no longer in flight here
                for outcome in outcomes:
                    if outcome is None:
                        stats.finished(pool, time.monotonic() - sent, False)
            again: list[tuple[int, set[str]]] = []
            for i, outcome in zip(indices, outcomes, strict=True):
                if outcome is not None:
                    self.run.record_call("llm", prompts[i], sent, pool=pool,
                                         reply=outcome.reply,
                                         error=f"{outcome.error_type}: {outcome.error}"
                                         if outcome.reply is None else "")
                if outcome is not None and outcome.reply is not None:
                    merge_usage(self.run.usage, outcome.reply.usage)
                    if paid is not None and pool in outcome.reply.usage:
                        paid[i] = (pool, outcome.reply.usage[pool])
                    self.run.settle(held.pop(i), pool, outcome.reply)
                    results[i] = first[i] = outcome.reply.text
                    if self._fails_check(results[i], options[i]):  # cascade: a stronger pool
                        escalated.add(i)
                        again.append((i, self._not_stronger(pool)))
                        self.run.sub_calls_done -= 1  # not done yet: it goes on elsewhere
                    else:
                        served[pool] = served.get(pool, 0) + 1
                    continue
                self.run.ledger.settle(held.pop(i))
                kind = "no lane answered" if outcome is None else outcome.error_type or "error"
                failures[pool, kind] = failures.get((pool, kind), 0) + 1
                if outcome is None:  # no lane answered: try again, one by one
                    again.append((i, set()))
                    continue
                self.run.usage.setdefault(pool, PoolUsage()).errors += 1
                if self.run.query.pool_override or "pool" in options[i]:
                    results[i] = f"[error] {outcome.error_type}: {outcome.error}"
                    continue
                again.append((i, {pool}))
            for (failed_pool, kind), n in failures.items():
                if failed_pool == pool and span.is_recording():  # every pool that failed, why
                    span.add_event("route.fallback", {"pool": pool, "error.type": kind,
                                                      "prompts": n})
            async with anyio.create_task_group() as tg:
                for i, failed in again:
                    tg.start_soon(one_by_one, i, failed)

        escalated: set[int] = set()
        first: dict[int, str] = {}  # the routed pool's own answer (a label is about that pool)

        async def one_by_one(i: int, failed: set[str]) -> None:
            opts = dict(options[i], hint="hard") if i in escalated else options[i]
            if i in escalated:
                trace.get_current_span().add_event("cascade.escalate", {
                    "from": ",".join(sorted(failed)), "check": str(opts["escalate_if"])})
            try:
                results[i] = await self._sub_llm_refs(prompts[i], opts, pictures[i], failed,
                                                      served=served)
            except LookupError as exc:  # no stronger pool: the answer that failed stands
                if i not in escalated:
                    results[i] = item_error(exc)
            except Exception as exc:  # this prompt's own error, as text; the batch goes on
                results[i] = item_error(exc)
            self.run.sub_calls_done += 1

        shadows = self._shadow_plan(prompts, options, by_pool, pictures)
        shadowed: dict[int, str] = {}

        async def shadow_one(i: int, pool: str) -> None:
            try:
                shadowed[i] = await self._sub_llm_refs(prompts[i], dict(options[i], pool=pool),
                                                       [])
            except Exception:  # one label lost; the run's answer never waits on it
                pass

        async with anyio.create_task_group() as tg:
            for pool, indices in by_pool.items():
                tg.start_soon(pool_share, pool, indices)
            for i, (_, partner) in shadows.items():  # alongside, not after: no added latency
                tg.start_soon(shadow_one, i, partner)
        if shadows:
            await self._learn_shadows(prompts, results, shadows, shadowed, first)
        if span.is_recording():  # where the prompts were answered, after any fallback
            span.set_attribute("heterarch.route.pools",
                               [f"{pool}={n}" for pool, n in served.items()])
            if failures:
                span.set_attribute("heterarch.route.failed", sorted(
                    f"{pool}={n} {kind}" for (pool, kind), n in failures.items()))
        return results

    def _not_stronger(self, pool: str) -> set[str]:
        """``pool`` and every pool of no higher tier: where an escalation must not go (the
        strongest left may be weaker than the pool whose answer failed the check)."""
        own = self.run.pools.get(pool)
        if own is None:
            return {pool}
        return {pool} | {name for name, info in self.run.pools.items() if info.tier <= own.tier}

    def _run_excluded(self) -> set[str]:
        q = self.run.query
        return set(self.run.pools) - set(q.pools) if q.pools else set()

    def _shadow_plan(self, prompts: list[str], options: list[dict[str, Any]],
                     by_pool: dict[str, list[int]],
                     pictures: Sequence[Sequence[ImageRef]]) -> dict[int, tuple[str, str]]:
        """Which routed prompts the router shadows on another pool (labels without a
        person): index -> (routed pool, shadow pool). None where the code or the run chose
        the pool, or the router does not learn."""
        shadow_of = getattr(self.run.services.router, "shadow_of", None)
        if shadow_of is None or self.run.query.pool_override:
            return {}
        exclude = self._run_excluded()
        plan: dict[int, tuple[str, str]] = {}
        for pool, indices in by_pool.items():
            for i in indices:
                if "pool" not in options[i] and not pictures[i]:
                    partner = shadow_of(prompts[i], pool, exclude=exclude)
                    if partner:
                        plan[i] = (pool, partner)
        return plan

    async def _learn_shadows(self, prompts: list[str], results: list[str],
                             plan: dict[int, tuple[str, str]], shadowed: dict[int, str],
                             first: dict[int, str]) -> None:
        """Give the router each shadowed pair (the routed pool's own first answer, not what
        a fallback or the cascade put in its place); where the shadow ran on the reference
        pool, its answer (paid for, and the stronger) stands."""
        router: Any = self.run.services.router
        exclude = self._run_excluded()
        span = trace.get_current_span()
        for i, (pool, partner) in plan.items():
            theirs, mine = shadowed.get(i), first.get(i)
            if theirs is None or mine is None:
                continue
            labels = await router.learn(prompts[i], (pool, mine), (partner, theirs),
                                        exclude=exclude)
            span.add_event("route.shadow", {"pool": pool, "shadow": partner,
                                            "items": len(labels),
                                            "agreed": sum(x.agree for x in labels)})
            if router.is_reference(partner, exclude=exclude):
                results[i] = theirs

    async def _once(self, prompts: list[str], options: list[dict[str, Any]],
                    first: list[int]) -> list[str]:
        """The batch with each repeated prompt sent once (``first[i]``: the index of prompt
        ``i``'s first occurrence); a repeat gets its first's answer and counts as a call-cache
        hit on the pool that answered, with what that call cost (on every worker at once, a
        repeat would otherwise be paid again: the cache's single flight is per process)."""
        unique = sorted(set(first))
        paid: dict[int, tuple[str, PoolUsage]] = {}
        answers = await self._batched([prompts[i] for i in unique],
                                      [options[i] for i in unique], None, paid)
        answer_of = dict(zip(unique, answers, strict=True))
        slot_of = {i: k for k, i in enumerate(unique)}
        for i, j in enumerate(first):
            if i == j or slot_of[j] not in paid:
                continue
            pool, cost = paid[slot_of[j]]
            u = self.run.usage.setdefault(pool, PoolUsage(hardware=cost.hardware))
            u.cache_hits += 1  # what the first cost, or saved if it came from the cache
            u.cache_saved_tokens += cost.tokens + cost.cache_saved_tokens
            u.cache_saved_usd += cost.cost_usd + cost.cache_saved_usd
        return [answer_of[j] for j in first]

    def route(self, prompt: str, kind: str, options: dict[str, Any],
               exclude: set[str], pictures: Sequence[ImageRef] = ()) -> tuple[str, str]:
        images = len(pictures)
        explicit = options.pop("pool", None)
        if explicit:
            return self._image_pool(str(explicit), images), "pool named by the code"
        if self.run.query.pool_override:
            pool = self._image_pool(self.run.query.pool_override, images)
            return pool, "pool override of this run"
        route = self.run.services.require_router()
        extra: dict[str, Any] = {"images": images} if images else {}
        if images and options.get("text_px"):  # how small the text is: pools that read it
            extra.update(text_px=float(options.pop("text_px")),
                         image_sizes=[(p.width, p.height) for p in pictures])
        if self.run.query.pools:  # this run may use only these pools
            exclude = exclude | (set(self.run.pools) - set(self.run.query.pools))
        decision = route(
            prompt=prompt, kind=kind, depth=self.run.query.depth + 1, tag=options.pop("tag", ""),
            exclude=exclude, budget_left=self.run.ledger.fraction_left(),
            hint=options.pop("hint", ""), **extra,
        )
        return decision.pool, decision.reason

    def _image_pool(self, pool: str, images: int) -> str:
        """``pool``, unless images would go to a pool whose model does not read them."""
        config = self.run.pools.get(pool)
        if images and config is not None and not config.reads_images:
            raise InvalidImage(f"pool {pool!r} is text-only (modalities "
                               f"{list(config.modalities)}); images need a vision pool")
        return pool

    async def sub_llm(self, prompt: str, options: dict[str, Any], images: Any = None) -> str:
        self.run.check_budget()
        if not images:
            return await self._sub_llm_refs(prompt, options, [])
        blobs = self.run.services.blobs
        refs = await store_wire_images(blobs, images)
        try:
            return await self._sub_llm_refs(prompt, options, refs)
        finally:  # the images lived for this one call
            with anyio.CancelScope(shield=True):
                await _delete_images(blobs, refs)

    async def _sub_llm_refs(self, prompt: str, options: dict[str, Any],
                            images: list[ImageRef], failed: set[str] | None = None, *,
                            served: dict[str, int] | None = None) -> str:
        """One prompt, on the pool the router picks, then another pool after a failure (up to
        three). ``served``: counts where it was answered."""
        options = dict(options)
        max_tokens = options.pop("max_tokens", None)
        failed = set(failed or ())
        stats = self.run.stats()
        answered: str | None = None  # a reply that failed the check, kept until a better one
        while True:
            try:
                pool, reason = self.route(prompt, "llm", dict(options), failed, images)
            except LookupError:  # NoPoolFits: no stronger pool left to escalate to
                if answered is None:
                    raise
                return answered
            span = trace.get_current_span()
            held = self.run.reserve(pool, prompt, max_tokens)
            sent = time.monotonic()
            self.run.sub_call_sent(pool)
            if stats is not None:
                stats.started(pool)
            message = Prompt(prompt=prompt, max_tokens=max_tokens, images=images,
                             route_reason=reason, cache_scope=self.run.cache_scope,
                             cache_across_runs=self.run.query.cache_across_runs,
                             cache_owner=self.run.cache_owner(uuid.uuid4().hex)
                             if self.run.cache_scope else "")
            resent = 0

            def again(message: Prompt = message) -> Prompt:
                nonlocal resent
                resent += 1  # the attempt before was lost with its lane
                return message

            try:
                async with self.lanes.lane(pool) as lane:
                    self.run.count_agent(lane)
                    try:
                        reply: LLMReply = await lane.ask(
                            message, timeout=prompts_timeout(self.run.pools.get(pool)),
                            resend=again)
                    except anyio.get_cancelled_exc_class():
                        self.run.lost(pool, prompt, max_tokens, 1 + resent, cancelled=True)
                        raise
            except Exception as exc:
                self.run.record_call("llm", prompt, sent, pool=pool,
                                     error=f"{type(exc).__name__}: {exc}")
                # an attempt that got no answer at all may have been made (and billed)
                self.run.lost(pool, prompt, max_tokens,
                           resent + isinstance(exc, AskTimeout | ActorDead))
                self.run.ledger.settle(held)
                self.run.sub_call_finished(pool)
                if stats is not None:
                    stats.finished(pool, time.monotonic() - sent, False)
                failed.add(pool)
                self.run.usage.setdefault(pool, PoolUsage()).errors += 1
                span.add_event("route.fallback", {  # every pool tried, and why it failed
                    "pool": pool, "error.type": getattr(exc, "remote_type", "")
                    or type(exc).__name__, "error": str(exc)[:300]})
                if self.run.query.pool_override or len(failed) >= 3 or "pool" in options:
                    raise
                continue
            self.run.sub_call_finished(pool)
            if stats is not None:
                stats.finished(pool, time.monotonic() - sent, True)
            self.run.record_call("llm", prompt, sent, pool=pool, reply=reply)
            # an attempt whose paid answer the cache gave back (reclaimed) is counted at its
            # real usage in the reply, not as lost
            self.run.lost(pool, prompt, max_tokens, max(0, resent - sum(
                u.reclaimed_calls for u in reply.usage.values())))
            merge_usage(self.run.usage, reply.usage)
            self.run.settle(held, pool, reply)
            if (self._fails_check(reply.text, options) and "hint" not in options
                    and "pool" not in options and not self.run.query.pool_override):
                # the cascade: a cheap pool answered first; its answer failed the check
                span.add_event("cascade.escalate", {"from": pool,
                                                    "check": str(options["escalate_if"])})
                answered, options = reply.text, dict(options, hint="hard")
                failed |= self._not_stronger(pool)
                continue
            if served is not None:
                served[pool] = served.get(pool, 0) + 1
            return reply.text

    @staticmethod
    def _fails_check(text: str, options: dict[str, Any]) -> bool:
        """``escalate_if`` (a regex the code passed): the answer needs a stronger pool."""
        check = options.get("escalate_if")
        return bool(check) and re.search(str(check), text, re.MULTILINE) is not None


async def _delete_images(blobs: BlobStore, images: list[ImageRef]) -> None:
    for image in images:
        try:
            await blobs.delete_blob(image.ref)
        except Exception:  # already gone: nothing left to free
            pass


def _repeats(prompts: list[str], options: list[dict[str, Any]]) -> list[int] | None:
    """Per prompt, the index of its first occurrence in the batch (same prompt and options);
    None when no prompt repeats."""
    seen: dict[str, int] = {}
    first = [seen.setdefault(repr((p, sorted(o.items(), key=lambda kv: kv[0]))), i)
             for i, (p, o) in enumerate(zip(prompts, options, strict=True))]
    return first if len(seen) < len(prompts) else None
