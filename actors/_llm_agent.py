"""``LLMAgent``: one completion on the model of the pool it runs on."""

from __future__ import annotations

from typing import Any

from ._actor import Actor
from ._agent_messages import LLMReply, PoolUsage, Prompt
from ._images import image_parts


class LLMAgent(Actor):
    """Answers ``Prompt`` with a completion from ``ctx.llm`` (its pool's model client).

    Spawn it on a pool that has a model (``pool="fast"``). It holds no state between prompts,
    so one agent can serve many prompts one after another (the RLM agent keeps a few per pool).
    """

    async def prompt(self, msg: Prompt) -> LLMReply:
        messages: list[dict[str, Any]] = list(msg.messages) or [
            {"role": "user", "content": msg.prompt}]
        if msg.images:  # the bytes come from the blob store here, next to the model call
            parts = await image_parts(self.ctx.service("blobs"), msg.images)
            messages = [{"role": "user",
                         "content": [{"type": "text", "text": msg.prompt}, *parts]}]
        options: dict[str, Any] = {}
        if msg.max_tokens is not None:
            options["max_tokens"] = msg.max_tokens
        if msg.temperature is not None:
            options["temperature"] = msg.temperature
        completion = await self.ctx.llm.complete(messages, **options)
        usage = PoolUsage(
            calls=1,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost_usd=completion.cost_usd,
            hardware=getattr(self.ctx.llm, "hardware", ""),
        )
        return LLMReply(
            text=completion.text, pool=self.ctx.pool, model=completion.model,
            usage={self.ctx.pool: usage},
        )
