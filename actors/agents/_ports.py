"""What the built-in agents need from the engine, as Protocols this package owns.

The engine (``runtime``) satisfies them and hands them to an agent as one ``AgentServices``
(``ctx.agent_services``): the model client of the agent's pool, what is known of every pool,
the router of sub-calls, a source of started sandboxes and a blob store. Nothing here is the
engine's own class: no transport, no config, no string-keyed lookup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgspec

#: One chat message as OpenAI's API takes it: ``content`` is text or a list of parts (text,
#: ``image_url``); the values are the provider's, not the engine's.
ChatMessage = dict[str, Any]
#: A function the sandbox's code may call on the host (``llm_query`` and its kin); it takes
#: whatever the code passes.
SandboxCallback = Callable[..., Awaitable[Any]]


class PoolInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent knows of one pool: its model, prices, limits and timeouts.

    Prices are dollars per million tokens (0: unknown). ``max_concurrency`` model calls of a
    pool run at once on one worker; one call takes at most ``timeout_s`` per attempt and
    ``max_retries`` retries."""

    name: str
    hardware: str = "cpu"
    model: str = ""
    tier: int = 1
    description: str = ""
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    max_concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 3
    modalities: tuple[str, ...] = ("text",)
    context_window: int = 0  # tokens, prompt and answer together (0: unknown)

    @property
    def reads_images(self) -> bool:
        return "image" in self.modalities


class Completion(Protocol):
    """One finished model call."""

    @property
    def text(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def cost_usd(self) -> float: ...

    # Optional (read with ``cached_completion``): ``cached: bool``, answered from the run's call
    # cache, nothing paid; ``saved_usd: float``, what that answer cost when it was paid.


def cached_completion(completion: Completion) -> tuple[bool, float]:
    """``(cached, saved_usd)`` of a completion; (False, 0) for a client without a cache."""
    return (bool(getattr(completion, "cached", False)),
            float(getattr(completion, "saved_usd", 0.0)))


class CompletionClient(Protocol):
    """The model of one pool (its limits, retries and pricing are the client's business).
    ``cache_scope``: the run whose identical calls are answered once ("" or None: no cache);
    ``cache_across_runs``: any run's; ``cache_owner``: whose spend the call is (a
    ``CallOwner`` as text). Agents pass them only when the run caches (a client without a
    cache need not take them)."""

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                       temperature: float | None = None, cache_scope: str | None = None,
                       cache_across_runs: bool = False,
                       cache_owner: str = "") -> Completion: ...


class RouteDecision(Protocol):
    """Where a sub-call goes, and why (the reason goes on the sub-call's span)."""

    @property
    def pool(self) -> str: ...

    @property
    def reason(self) -> str: ...


class RouteStats(Protocol):
    """The router's live view of the pools, fed by the agents' sub-calls."""

    def started(self, pool: str) -> None: ...

    def finished(self, pool: str, latency_s: float, ok: bool) -> None: ...

    def latency(self, pool: str) -> float | None: ...


class SubCallRouter(Protocol):
    """Chooses the pool of one sub-call. Raises ``LookupError`` when no pool fits (all
    excluded, or none takes what the call needs)."""

    @property
    def stats(self) -> RouteStats: ...

    def __call__(self, *, prompt: str, kind: str = "llm", depth: int = 1, tag: str = "",
                 exclude: Iterable[str] = (), budget_left: float = 1.0, hint: str = "",
                 images: int = 0, text_px: float = 0.0,
                 image_sizes: Iterable[tuple[int, int]] = ()) -> RouteDecision: ...


class CellError(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def message(self) -> str: ...

    @property
    def traceback(self) -> str: ...


class CellResult(Protocol):
    """What one cell of a sandbox did: ``error`` when the code raised."""

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...

    @property
    def error(self) -> CellError | None: ...


@runtime_checkable
class LosesState(Protocol):
    """An error of a sandbox that may have restarted it (``state_lost``: its variables are
    gone)."""

    state_lost: bool


class AgentSandbox(Protocol):
    """A started Python REPL whose callbacks call the agent that took it."""

    async def exec(self, code: str, *, timeout: float = 60.0) -> CellResult: ...

    async def set_var(self, name: str, value: object) -> None: ...

    async def get_var(self, name: str, *, timeout: float = 60.0) -> object: ...

    async def close(self) -> None: ...


class SandboxSource(Protocol):
    """Started sandboxes, one per agent (the agent closes it)."""

    async def take(self, callbacks: Mapping[str, SandboxCallback]) -> AgentSandbox: ...


class BlobStore(Protocol):
    """Bytes too large for a message (contexts, images), by reference."""

    async def put_blob(self, data: bytes, *, name: str | None = None) -> str: ...

    async def get_blob(self, ref: str) -> bytes: ...

    async def delete_blob(self, ref: str) -> None: ...


class ServiceMissing(LookupError):
    """An agent needs a service its runtime was not configured with."""


@dataclass(frozen=True)
class AgentServices:
    """Everything a built-in agent reaches of the engine, for an agent on ``pool``.

    ``pools``: every pool of the config; ``llm``: the model client of ``pool`` (None where the
    pool has no model); ``router``, ``sandboxes``: None where the runtime has none. The
    ``require_*`` accessors raise ``ServiceMissing`` (a ``LookupError``) saying how to
    configure what is missing."""

    pool: str
    blobs: BlobStore
    pools: Mapping[str, PoolInfo] = field(default_factory=dict)
    llm: CompletionClient | None = None
    router: SubCallRouter | None = None
    sandboxes: SandboxSource | None = None

    @property
    def pool_info(self) -> PoolInfo | None:
        """The agent's own pool (None for a local actor or a pool the config lacks)."""
        return self.pools.get(self.pool)

    def require_llm(self) -> CompletionClient:
        if self.llm is None:
            raise ServiceMissing(
                f"pool {self.pool!r} has no model client: give the pool a `model` in the config "
                "and host it with `agent_services(config, pools)`")
        return self.llm

    def require_router(self) -> SubCallRouter:
        if self.router is None:
            raise ServiceMissing("no router on this node: host agents with "
                                 "`agent_services(config, pools)`")
        return self.router

    def require_sandboxes(self) -> SandboxSource:
        if self.sandboxes is None:
            raise ServiceMissing("no sandboxes on this node: host RLM agents with "
                                 "`agent_services(config, pools)`")
        return self.sandboxes

