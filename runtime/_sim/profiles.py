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

    def latency(self, completion_tokens: int) -> float:
        """Seconds an answer of this many tokens takes (before the time scale)."""
        if self.fixed_latency_s is not None:
            return self.fixed_latency_s
        return self.ttft_s + completion_tokens / self.tokens_per_s


def default_profiles() -> dict[str, Profile]:
    """Four pools: a wafer-scale chip, an H100 with an open model, a frontier API, a CPU."""
    def demo(easy: float, hard: float) -> RoutingResponder:
        return RoutingResponder(LabelResponder(Accuracy(easy, hard)))

    profiles = [
        Profile("sim/wafer-small", "wafer-scale", 0.02, 2000.0, 64, 0.10, 0.10, 1,
                responder=demo(0.998, 0.55),
                description="small fast model on a wafer-scale chip (simulated)"),
        Profile("sim/h100-open", "h100", 0.15, 150.0, 64, 0.60, 0.60, 2,
                responder=demo(0.998, 0.80), description="open model on an H100 (simulated)"),
        Profile("sim/frontier", "api", 0.50, 80.0, 64, 3.00, 15.00, 3,
                responder=demo(0.999, 0.99), description="frontier API model (simulated)"),
        Profile("sim/cpu-tiny", "cpu", 0.30, 20.0, 8, 0.05, 0.05, 0,
                responder=demo(0.95, 0.40), description="tiny model on CPU (simulated)"),
    ]
    return {p.model: p for p in profiles}


def estimate_tokens(text: str) -> int:
    """About four characters a token: cheap, deterministic, good enough for prices."""
    return max(1, (len(text) + 3) // 4)


def profiles_toml(profiles: dict[str, Profile], base_url: str, *, modules: Sequence[str],
                  capacity: int = 256) -> str:
    """A pools config for these simulated pools (what the demo writes for its workers)."""
    names = {"sim/wafer-small": "wafer", "sim/h100-open": "h100", "sim/frontier": "frontier",
             "sim/cpu-tiny": "cpu", "sim/vlm-small": "vision-small",
             "sim/frontier-vlm": "vision-frontier"}
    out = []
    for model, p in profiles.items():
        name = names.get(model, model.replace("/", "-"))
        out += [f"[pools.{name}]", f'hardware = "{p.hardware}"', f"capacity = {capacity}",
                f"modules = {json.dumps(list(modules))}", f'model = "openai/{model}"',
                f'api_base = "{base_url}"', f"input_price_per_mtok = {p.input_price_per_mtok}",
                f"output_price_per_mtok = {p.output_price_per_mtok}",
                f"max_concurrency = {p.concurrency}", f"tier = {p.tier}",
                f"modalities = {json.dumps(list(p.modalities))}",
                f'description = "{p.description}"', ""]
    return "\n".join(out)
