"""Messages of the built-in agents (``LLMAgent``, ``RLMAgent``) and usage roll-ups."""

from __future__ import annotations

from typing import Any

import msgspec

from .._messages import Ask, Inbox
from .._ref import ActorRef


class PoolUsage(msgspec.Struct, kw_only=True):
    """Model calls, tokens and dollars spent on one pool."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    hardware: str = ""
    # Calls whose reply was lost (their lane or child died before answering; they were sent
    # again): perhaps billed by the provider, so counted at their budget estimate (prompt plus
    # max_tokens, at the pool's prices). Not in ``tokens``/``cost_usd``; in the run's totals.
    lost_calls: int = 0
    lost_tokens: int = 0
    lost_cost_usd: float = 0.0
    # Prompt caching by the provider: input tokens it read from its cache (in input_tokens,
    # billed at the cached price) and the dollars that saved against the full input price.
    cached_input_tokens: int = 0
    prompt_cache_saved_usd: float = 0.0
    # heterarch's own call cache: calls answered from it (never sent, nothing paid) and the
    # tokens and dollars they cost when they were paid.
    cache_hits: int = 0
    cache_saved_tokens: int = 0
    cache_saved_usd: float = 0.0
    # Calls in flight when the run was cancelled (stopped, interrupted, past its deadline):
    # aborted, but perhaps accepted and billed by the provider, so counted like lost calls.
    cancelled_calls: int = 0
    cancelled_tokens: int = 0
    cancelled_cost_usd: float = 0.0
    # Of ``calls``: calls paid earlier in this run whose usage was lost with who counted it (a
    # restarted root's first life, a lane that died with the reply), found in the call cache
    # and counted once here (never sent again).
    reclaimed_calls: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


Usage = dict[str, PoolUsage]


def merge_usage(into: Usage, other: Usage) -> Usage:
    """Add ``other`` into ``into`` (in place) and return it."""
    for pool, u in other.items():
        mine = into.setdefault(pool, PoolUsage(hardware=u.hardware))
        mine.calls += u.calls
        mine.input_tokens += u.input_tokens
        mine.output_tokens += u.output_tokens
        mine.cost_usd += u.cost_usd
        mine.errors += u.errors
        mine.lost_calls += u.lost_calls
        mine.lost_tokens += u.lost_tokens
        mine.lost_cost_usd += u.lost_cost_usd
        mine.cached_input_tokens += u.cached_input_tokens
        mine.prompt_cache_saved_usd += u.prompt_cache_saved_usd
        mine.cache_hits += u.cache_hits
        mine.cache_saved_tokens += u.cache_saved_tokens
        mine.cache_saved_usd += u.cache_saved_usd
        mine.cancelled_calls += u.cancelled_calls
        mine.cancelled_tokens += u.cancelled_tokens
        mine.cancelled_cost_usd += u.cancelled_cost_usd
        mine.reclaimed_calls += u.reclaimed_calls
        mine.hardware = mine.hardware or u.hardware
    return into


def call_usage(completion: Any, *, hardware: str = "") -> PoolUsage:
    """One model call's usage, from its completion (``input_tokens``, ``output_tokens``,
    ``cost_usd``; optionally ``cached_tokens`` and ``prompt_cache_saved_usd``, the provider's
    prompt cache, and ``cached``/``saved_usd``, the call cache): a paid call, or an answer from
    the call cache (no call, no tokens, no dollars: a hit, with what it saved)."""
    tokens = int(completion.input_tokens) + int(completion.output_tokens)
    if getattr(completion, "cached", False):
        return PoolUsage(cache_hits=1, cache_saved_tokens=tokens,
                         cache_saved_usd=float(getattr(completion, "saved_usd", 0.0)),
                         hardware=hardware)
    return PoolUsage(calls=1, input_tokens=int(completion.input_tokens),
                     output_tokens=int(completion.output_tokens),
                     cost_usd=float(completion.cost_usd),
                     cached_input_tokens=int(getattr(completion, "cached_tokens", 0)),
                     prompt_cache_saved_usd=float(getattr(completion, "prompt_cache_saved_usd",
                                                          0.0)),
                     reclaimed_calls=int(bool(getattr(completion, "reclaimed", False))),
                     hardware=hardware)


def add_lost(usage: Usage, pool: str, tokens: int, dollars: float, calls: int = 1) -> None:
    """Count ``calls`` lost calls on ``pool``, each at its estimate (``tokens``, ``dollars``)."""
    u = usage.setdefault(pool, PoolUsage())
    u.lost_calls += calls
    u.lost_tokens += tokens * calls
    u.lost_cost_usd += dollars * calls


def add_cancelled(usage: Usage, pool: str, tokens: int, dollars: float, calls: int = 1) -> None:
    """Count ``calls`` calls on ``pool`` cancelled in flight, each at its estimate."""
    u = usage.setdefault(pool, PoolUsage())
    u.cancelled_calls += calls
    u.cancelled_tokens += tokens * calls
    u.cancelled_cost_usd += dollars * calls


def total_cost(usage: Usage) -> float:
    """Dollars spent: the calls that answered, and lost or cancelled calls at their estimate."""
    return sum(u.cost_usd + u.lost_cost_usd + u.cancelled_cost_usd for u in usage.values())


def total_tokens(usage: Usage) -> int:
    """Tokens spent: the calls that answered, and lost or cancelled calls at their estimate."""
    return sum(u.tokens + u.lost_tokens + u.cancelled_tokens for u in usage.values())


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """Limits for one run (0 = unlimited). Children get what is left."""

    tokens: int = 0
    dollars: float = 0.0
    wall_s: float = 0.0
    calls: int = 0  # model calls: the agents' own and every sub-call (lost ones too)


class LLMReply(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    pool: str
    model: str
    usage: Usage


class ImageRef(msgspec.Struct, frozen=True, kw_only=True):
    """An image in the blob store (its bytes never travel in a message)."""

    ref: str
    mime: str  # "image/png" or "image/jpeg"
    width: int
    height: int
    size: int  # bytes


class Prompt(Ask[LLMReply], frozen=True, kw_only=True, tag="heterarch.Prompt"):
    """One completion: either ``prompt`` (a user message) or full chat ``messages``.

    ``images`` go with ``prompt`` as OpenAI ``image_url`` content parts (the pool's model must
    accept images: see ``PoolConfig.modalities``)."""

    prompt: str = ""
    messages: list[dict[str, str]] = []
    max_tokens: int | None = None
    temperature: float | None = None
    images: list[ImageRef] = []
    route_reason: str = ""  # why the router chose this pool (on the sub-call's span)
    # The run's call cache (``Query.cache_calls``): an identical call of the run (or of any
    # run, with ``cache_across_runs``) is answered from it, not paid again. "": no cache.
    cache_scope: str = ""
    cache_across_runs: bool = False
    cache_owner: str = ""  # whose spend the call is (``CallOwner``, as text)


class PromptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One prompt of a ``PromptChunk``, done: its ``reply``, or the error it ended with."""

    index: int
    reply: LLMReply | None = None
    error_type: str = ""
    error: str = ""


class PromptResults(msgspec.Struct, frozen=True):
    """Finished prompts of a chunk: sent as progress to the asker's inbox while it runs, and
    all of them as the reply (progress travels on another subject: it may arrive later)."""

    outcomes: list[PromptOutcome]


class PromptChunk(Ask[PromptResults], frozen=True, kw_only=True, tag="heterarch.PromptChunk"):
    """Many prompts for one lane, run concurrently within its pool's limit. ``indices`` name
    them in the caller's batch; finished ones go to ``inbox`` as they finish, so a lost worker
    costs only the unfinished ones."""

    indices: list[int]
    prompts: list[str]
    max_tokens: int | None = None
    inbox: Inbox | None = None
    route_reasons: list[str] = []  # why the router chose this pool, per prompt
    images: list[list[ImageRef]] = []  # per prompt (empty: no images), in the blob store
    cache_scope: str = ""  # as ``Prompt.cache_scope``
    cache_across_runs: bool = False
    cache_owner: str = ""  # as ``Prompt.cache_owner``; each prompt's call: ``call.<index>``


class SubCall(msgspec.Struct, frozen=True, kw_only=True):
    """One call the model's code made from the REPL: a plain completion (``kind="llm"``), a
    child agent (``"rlm"``) or a user tool (``"tool"``, ``name`` says which), with its pool,
    texts, tokens, dollars and latency; ``error`` when it failed."""

    kind: str
    name: str = ""
    pool: str = ""
    prompt: str = ""
    reply: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str = ""


class Step(msgspec.Struct, frozen=True, kw_only=True, tag="heterarch.Step"):
    """One iteration of an RLM agent: its model's ``reply`` (on ``pool``, with tokens, dollars
    and latency), the ``code`` blocks it ran, the ``output`` the model saw next (truncated as
    the model saw it) and the ``sub_calls`` that code made. Full texts."""

    agent_id: str
    depth: int
    iteration: int
    pool: str = ""
    reply: str = ""
    code: list[str] = []
    output: str = ""
    sub_calls: list[SubCall] = []
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """The result of an ``RLMAgent`` run, with usage rolled up over the whole tree."""

    text: str
    ok: bool
    stop_reason: str  # "final", "max_iterations", "budget: ...", "error: ..."
    iterations: int
    usage: Usage
    cost_usd: float
    wall_s: float
    agents_by_depth: dict[int, int] = {}
    trace_id: str = ""
    trajectory: list[Step] = []  # the root agent's iterations (a child returns none)
    value: Any = None  # the final answer as data, when a type was asked for


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A user tool the model's code may call from the REPL: its ``name``, its Python
    ``signature`` (``"(city: str, days: int = 3) -> dict"``) and what it does (``doc``).
    It runs host-side, where ``Query.host`` is."""

    name: str
    signature: str = "(*args, **kwargs)"
    doc: str = ""


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a tool returned (JSON-able), or the error it raised (``error``: type and text)."""

    value: Any = None
    error: str = ""


class CallTool(Ask[ToolResult], frozen=True, kw_only=True, tag="heterarch.CallTool"):
    """Run the user tool ``name`` with these (JSON-able) arguments; the reply is a
    ``ToolResult``."""

    name: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class CheckAnswer(Ask[ToolResult], frozen=True, kw_only=True, tag="heterarch.CheckAnswer"):
    """Is ``value`` a valid final answer of the type the asker wants? The reply is a
    ``ToolResult``: the value as the type's JSON form, or why it is not one."""

    value: Any = None


class Query(Ask[Answer], frozen=True, kw_only=True, tag="heterarch.Query"):
    """Ask an ``RLMAgent`` a question about a context too large for any prompt.

    ``context`` is the text itself, or ``context_ref`` a blob reference (from
    ``put_blob``) so large contexts never travel in a message. ``pool_override`` sends every
    sub-call to one pool (the homogeneous baselines); empty means the router decides.
    """

    question: str
    context: str = ""
    context_ref: str = ""
    max_depth: int = 2
    max_iterations: int = 12
    depth: int = 0
    budget: Budget = Budget()
    pool_override: str = ""
    cell_timeout_s: float = 120.0
    images: list[ImageRef] = []  # an image context: ``context`` is then a list of images
    pools: list[str] = []  # the pools the router may use for this run's tree (empty: all)
    route_reason: str = ""  # why the router placed this agent on its pool
    conversation_id: str = ""  # the run's id, on every agent span (gen_ai.conversation.id)
    progress: Inbox | None = None  # where the root agent reports ``RunProgress`` (live view)
    steps: Inbox | None = None  # where the root agent sends each ``Step`` as it ends (run log)
    system_prompt: str = ""  # replaces the built-in instructions (the root agent only)
    instructions: str = ""  # appended to them (the root agent only)
    tools: list[ToolSpec] = []  # user tools, callable from the REPL (children get them too)
    host: ActorRef[Any] | None = None  # the asker's host: answers CallTool and CheckAnswer
    answer_schema: dict[str, Any] = {}  # the final answer's JSON schema (the root only)
    # Nothing paid twice: identical model calls of this run (its own and its sub-calls',
    # anywhere in its tree) are answered once, from a cache that outlives the root (a root
    # restarted elsewhere finds its answers). ``cache_scope`` names the run (default: the
    # ``conversation_id``, else the root agent's id; children inherit it);
    # ``cache_across_runs`` also answers from, and adds to, the cache all runs share (opt-in).
    cache_calls: bool = True
    cache_scope: str = ""
    cache_across_runs: bool = False
    # Whose spend the tree's calls are (set by the root, inherited): the run (the root's id)
    # and the root's incarnation (one per restart), so that a restarted root counts what its
    # earlier life paid once (``CallOwner``).
    run_id: str = ""
    incarnation: str = ""
    # The root's child whose subtree this agent is in (its calls are ``<branch>:...``), so
    # that a cancelled root finds what that subtree paid though it never answers.
    branch: str = ""


class RunProgress(msgspec.Struct, frozen=True, kw_only=True, tag="heterarch.RunProgress"):
    """Where a run stands, from its root agent to ``Query.progress``: the iteration, what it
    does now (``phase``), usage so far (this run only), failed sub-calls, sub-calls done of
    those started, and per pool: (sub-calls answered or failed there, sent there)."""

    agent_id: str
    iteration: int
    max_iterations: int
    phase: str
    usage: Usage = {}
    errors: int = 0
    sub_calls_done: int = 0
    sub_calls_started: int = 0
    pools: dict[str, tuple[int, int]] = {}
