"""``LLMAgent``: completions on the model of the pool it runs on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from opentelemetry import trace

from .._actor import Actor
from ._images import image_parts
from ._messages import (
    ImageRef,
    LLMReply,
    Prompt,
    PromptChunk,
    PromptOutcome,
    PromptResults,
    call_usage,
)
from ._spans import mark_failed, note_route

#: How long finished prompts of a chunk wait for company before they travel as progress:
#: calls that started together finish together, and go back in one message.
PROGRESS_WINDOW_S = 0.02


class LLMAgent(Actor):
    """Answers ``Prompt`` with a completion from its pool's model client
    (``ctx.agent_services.llm``), and
    ``PromptChunk`` with many, run concurrently (the client keeps them within the pool's
    ``max_concurrency``).

    Spawn it on a pool that has a model (``pool="fast"``). It holds no state between prompts,
    so one agent can serve many prompts one after another (the RLM agent keeps a few per pool).
    """

    async def prompt(self, msg: Prompt) -> LLMReply:
        note_route(msg.route_reason)
        messages: list[dict[str, Any]] = (
            await self._user_message(msg.prompt, msg.images) if msg.images or not msg.messages
            else list(msg.messages))
        return await self._complete(messages, msg.max_tokens, msg.temperature,
                                    msg.cache_scope, msg.cache_across_runs, msg.cache_owner)

    async def _user_message(self, prompt: str,
                            images: Sequence[ImageRef]) -> list[dict[str, Any]]:
        """One user message; images as ``image_url`` parts, their bytes fetched from the blob
        store here, next to the model call."""
        if not images:
            return [{"role": "user", "content": prompt}]
        parts = await image_parts(self.ctx.agent_services.blobs, images)
        return [{"role": "user", "content": [{"type": "text", "text": prompt}, *parts]}]

    async def prompt_chunk(self, msg: PromptChunk) -> PromptResults:
        if len(msg.indices) != len(msg.prompts):
            raise ValueError("PromptChunk needs one index per prompt")
        note_route(msg.route_reasons)
        done: list[PromptOutcome] = []
        unsent: list[PromptOutcome] = []
        left = len(msg.prompts)
        flushing = False

        async def one(index: int, prompt: str, images: Sequence[ImageRef]) -> None:
            nonlocal left, flushing
            try:
                reply = await self._complete(await self._user_message(prompt, images),
                                             msg.max_tokens, None, msg.cache_scope,
                                             msg.cache_across_runs,
                                             f"{msg.cache_owner}.{index}"
                                             if msg.cache_owner else "")
                outcome = PromptOutcome(index=index, reply=reply)
            except Exception as exc:  # the asker owns it: it falls back or raises
                outcome = PromptOutcome(index=index, error_type=type(exc).__name__,
                                        error=str(exc)[:1000])
            done.append(outcome)
            unsent.append(outcome)
            left -= 1
            if msg.inbox is None or flushing or left == 0:
                return  # the reply carries it
            flushing = True
            try:
                await anyio.sleep(PROGRESS_WINDOW_S)
                if left and unsent:
                    batch = unsent[:]
                    unsent.clear()
                    await self.ctx.send_to_inbox(msg.inbox, PromptResults(batch))
            finally:
                flushing = False

        async with anyio.create_task_group() as tg:
            images = msg.images or [[] for _ in msg.prompts]
            for index, prompt, pictures in zip(msg.indices, msg.prompts, images, strict=True):
                tg.start_soon(one, index, prompt, pictures)
        failed = [o for o in done if o.reply is None]
        if failed:  # the chunk's span says so; the asker falls back for these prompts
            mark_failed(trace.get_current_span(), failed[0].error_type,
                        f"{len(failed)} of {len(done)} prompts failed: {failed[0].error}")
        return PromptResults(done)  # all of them: progress may arrive after the reply

    async def _complete(self, messages: list[dict[str, Any]], max_tokens: int | None,
                        temperature: float | None, cache_scope: str = "",
                        cache_across_runs: bool = False, cache_owner: str = "") -> LLMReply:
        services = self.ctx.agent_services
        llm = services.require_llm()
        if cache_scope:
            completion = await llm.complete(
                messages, max_tokens=max_tokens, temperature=temperature,
                cache_scope=cache_scope, cache_across_runs=cache_across_runs,
                **({"cache_owner": cache_owner} if cache_owner else {}))
        else:
            completion = await llm.complete(messages, max_tokens=max_tokens,
                                            temperature=temperature)
        own = services.pool_info
        usage = call_usage(completion, hardware=own.hardware if own is not None else "")
        return LLMReply(
            text=completion.text, pool=self.ctx.pool, model=completion.model,
            usage={self.ctx.pool: usage},
        )
