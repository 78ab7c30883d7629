"""Simulated pools: hardware profiles and the responders that write their answers.

A ``Profile`` is one model name the simulator serves: time to first token, output tokens per
second (or a fixed latency), a concurrency limit, prices, the capability tier, an injected
error rate, and a ``Responder`` (anything with ``reply(messages, model) -> str``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .oolong import Accuracy, LabelResponder, RootResponder

if TYPE_CHECKING:
    from .vision import VisionSpec


class Responder(Protocol):
    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str: ...


class EchoResponder:
    """Answers with the last user message (for smoke tests)."""

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        return str(messages[-1].get("content", "")) if messages else ""


class ScriptedResponder:
    """Answers with the given replies in order (the last one repeats); counts its ``calls``."""

    def __init__(self, replies: Sequence[str]) -> None:
        if not replies:
            raise ValueError("ScriptedResponder needs at least one reply")
        self.replies = list(replies)
        self.calls = 0

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        text = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return text


class RoutingResponder:
    """The demo's models: a chat with a system message is the root of an RLM run and gets
    ``RootResponder``'s program; any other chat is a sub-call and gets labels."""

    def __init__(self, label: Responder, root: Responder | None = None) -> None:
        self.label = label
        self.root = root or RootResponder()

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        if any(m.get("role") == "system" for m in messages):
            return self.root.reply(messages, model)
        return self.label.reply(messages, model)


@dataclass
class Profile:
    """One simulated pool: its hardware, speed, limits and prices."""

    model: str
    hardware: str
    ttft_s: float
    tokens_per_s: float
    concurrency: int
    input_price_per_mtok: float
    output_price_per_mtok: float
    tier: int
    error_rate: float = 0.0  # fraction of requests answered 429 or 500 (seeded, half each)
    responder: Responder = field(default_factory=EchoResponder)
    description: str = ""
    fixed_latency_s: float | None = None  # if set: every answer takes this long, whatever size
    modalities: tuple[str, ...] = ("text",)  # "image" too: it accepts image_url content parts
    vision: VisionSpec | None = None  # how it sees and counts images (``vision.VisionSpec``)
    # Hidden reasoning tokens a reasoning model writes before each answer: billed as output,
    # generated at ``tokens_per_s`` before the first visible token.
    reasoning_tokens: int = 0
    # A prefix cache per replica (docs/llm.md, "Prompt caching in the simulator"): requests go
    # round-robin over ``replicas`` (a plain load balancer), or to the replica a
    # ``prompt_cache_key`` names while it has a free slot. A prompt of at least 1,024 tokens
    # whose first blocks of 128 tokens that replica has seen is a hit: those tokens are
    # reported as ``prompt_tokens_details.cached_tokens``, cost ``cached_price_factor`` of the
    # input price, and need no prefill (uncached prompt tokens take ``prefill_tokens_per_s``;
    # 0: prefill not modelled).
    prefix_cache: bool = False
    replicas: int = 1
    prefill_tokens_per_s: float = 0.0
    cached_price_factor: float = 0.1
    context_window: int = 0  # tokens; 0: not said (the pools config leaves it to litellm)

    def latency(self, completion_tokens: int, prefill_tokens: int = 0) -> float:
        """Seconds an answer of this many tokens takes (before the time scale), after a
        prefill of ``prefill_tokens`` uncached prompt tokens."""
        if self.fixed_latency_s is not None:
            return self.fixed_latency_s
        prefill = prefill_tokens / self.prefill_tokens_per_s if self.prefill_tokens_per_s else 0.0
        return self.ttft_s + prefill + completion_tokens / self.tokens_per_s


def default_profiles(*, hard_words: tuple[str, ...] = ()) -> dict[str, Profile]:
    """Published offerings (sources in docs/llm.md): an 8B model and gpt-oss-120b on a
    wafer-scale chip (Cerebras-class), gpt-oss-120b on an RDU (SambaNova-class), an open model
    on an H100 with vLLM, a GPT-5-class frontier API with its reasoning, and a CPU.

    Speeds and prices are the published ones; how often each model labels a record right
    (``Accuracy``) is this simulator's assumption, the same for a model on any hardware.
    ``hard_words``: which records are hard for every model (default: the generator's hedged
    ones; ``oolong.shifted_difficulty`` gives models whose hard items differ from those)."""
    def demo(easy: float, hard: float) -> RoutingResponder:
        return RoutingResponder(LabelResponder(Accuracy(easy, hard, hard_words=hard_words)))

    small, large = (0.998, 0.55), (0.999, 0.99)  # Llama-3.1-8B-class, gpt-oss-120b-class
    profiles = [
        Profile("sim/wafer-small", "wafer-scale", 0.25, 1800.0, 64, 0.10, 0.10, 1,
                responder=demo(*small),
                description="Llama 3.1 8B on a wafer-scale chip (Cerebras-class, simulated)",
                context_window=8_192),
        Profile("sim/wafer-large", "wafer-scale", 1.54, 1844.0, 64, 0.25, 0.69, 3,
                responder=demo(*large),
                description="gpt-oss-120b on a wafer-scale chip (Cerebras-class, simulated)",
                context_window=131_072),
        Profile("sim/rdu-large", "rdu", 4.31, 738.0, 64, 0.22, 0.59, 3,
                responder=demo(*large),
                description="gpt-oss-120b on an RDU (SambaNova-class, simulated)",
                context_window=131_072),
        Profile("sim/h100-open", "h100", 0.15, 150.0, 64, 0.14, 0.14, 2,
                responder=demo(0.998, 0.80),
                description="open 8B model on one H100 with vLLM (simulated)",
                context_window=131_072),
        Profile("sim/frontier", "api", 0.89, 80.0, 64, 1.25, 10.00, 3,
                responder=demo(0.999, 0.99), reasoning_tokens=320,
                description="GPT-5-class frontier API, medium reasoning (simulated)",
                context_window=272_000),
        Profile("sim/cpu-tiny", "cpu", 0.30, 20.0, 8, 0.02, 0.02, 0,
                responder=demo(0.95, 0.40), description="tiny model on a CPU (simulated)",
                context_window=4_096),
    ]
    return {p.model: p for p in profiles}


# Pool names the demo and ``profiles_toml`` give the simulated models.
POOL_NAMES = {"sim/wafer-small": "wafer", "sim/wafer-large": "wafer-large",
              "sim/rdu-large": "rdu", "sim/h100-open": "h100", "sim/frontier": "frontier",
              "sim/cpu-tiny": "cpu", "sim/vlm-small": "vision-small",
              "sim/frontier-vlm": "vision-frontier"}


def estimate_tokens(text: str) -> int:
    """About four characters a token: cheap, deterministic, good enough for prices."""
    return max(1, (len(text) + 3) // 4)


def profiles_toml(profiles: dict[str, Profile], base_url: str, *, modules: Sequence[str],
                  capacity: int = 256) -> str:
    """A pools config for these simulated pools (what the demo writes for its workers)."""
    out = []
    for model, p in profiles.items():
        name = POOL_NAMES.get(model, model.replace("/", "-"))
        out += [f"[pools.{name}]", f'hardware = "{p.hardware}"', f"capacity = {capacity}",
                f"modules = {json.dumps(list(modules))}", f'model = "openai/{model}"',
                f'api_base = "{base_url}"', f"input_price_per_mtok = {p.input_price_per_mtok}",
                f"output_price_per_mtok = {p.output_price_per_mtok}",
                f"max_concurrency = {p.concurrency}", f"tier = {p.tier}",
                f"modalities = {json.dumps(list(p.modalities))}",
                f'description = "{p.description}"']
        if p.prefix_cache:
            out += [f"cached_input_price_per_mtok = "
                    f"{p.input_price_per_mtok * p.cached_price_factor:g}",
                    "prompt_cache_key = true"]
        if p.context_window:
            out.append(f"context_window = {p.context_window}")
        if p.vision is not None:  # what it reads: the router's legibility check
            out += [f"legible_px = {p.vision.reliable_px}",
                    f'image_resize = "{p.vision.rule}"']
        out.append("")
    return "\n".join(out)
