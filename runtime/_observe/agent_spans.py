"""The agents' spans on the engine side, per the GenAI conventions.

- ``create_agent {name}`` (the spawner, CLIENT: a request to a pool's worker): one per spawn on
  a pool. A restart's is a child of the failed incarnation's (and links to it), so a restarted
  agent stays in its run's trace.
- ``invoke_agent {name}`` (the actor's node, INTERNAL: the agent runs in that process): one per
  handled message. Its parent is
  the span that sent the message, except for the first work a parent gives a child it spawned
  under the same span (a batch spawning its lanes, a run spawning its root): then it is the
  child's ``create_agent`` span, so a batch reads create -> invoke -> chat instead of hundreds
  of create and invoke siblings.

``name`` is the one given to ``spawn(name=...)``, else the class name; ``gen_ai.provider.name``
(required by the conventions) is ``heterarch``, the agent platform (each ``chat`` span names
the model's provider). Failures end a span with ERROR status and ``error.type``; a handled
message that succeeded is OK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from actors import Actor, Address
from actors._semconv import mark_exception

from .._core.trace_context import tracer

AGENT_PROVIDER = "heterarch"


@dataclasses.dataclass(frozen=True)
class CreatedUnder:
    """Where a child was spawned: the span current at the spawn, and its create span."""

    parent_span_id: int
    create_context: Context


def agent_name(actor_class: type[Actor], name: str) -> str:
    return name or actor_class.__name__


@contextmanager
def create_agent_span(actor_class: type[Actor], *, name: str, actor_id: str, parent: Address,
                      depth: int, pool: str, hardware: str, restart: bool,
                      restart_of: CreatedUnder | None = None) -> Iterator[CreatedUnder]:
    """The ``create_agent`` span around a spawn on a pool; yields what the child's first
    invoke span will be parented to. ``restart_of``: the creation of the incarnation this
    one replaces (a supervisor restarts outside any span: the new creation goes under it)."""
    under = trace.get_current_span().get_span_context().span_id
    shown = agent_name(actor_class, name)
    context: Context | None = None
    links: list[trace.Link] = []
    if restart_of is not None:
        previous = trace.get_current_span(restart_of.create_context).get_span_context()
        links.append(trace.Link(previous, {"heterarch.link": "restart of"}))
        if not trace.get_current_span().get_span_context().is_valid:
            context = restart_of.create_context
    with tracer.start_as_current_span(
        f"create_agent {shown}", context=context, kind=trace.SpanKind.CLIENT, links=links,
        record_exception=False, set_status_on_exception=False,
        attributes={
            "gen_ai.operation.name": "create_agent",
            "gen_ai.provider.name": AGENT_PROVIDER,
            "gen_ai.agent.name": shown,
            "gen_ai.agent.id": actor_id,
            "heterarch.actor.class": actor_class.__qualname__,
            "heterarch.actor.id": actor_id,
            "heterarch.parent.id": parent.actor_id,
            "heterarch.pool": pool,
            "heterarch.hardware": hardware,
            "heterarch.depth": depth,
            "heterarch.restart": restart,
        },
    ) as span:
        try:
            yield CreatedUnder(under, trace.set_span_in_context(span))
        except Exception as exc:
            mark_exception(span, exc)
            raise
        span.set_status(trace.StatusCode.OK)


def first_work_context(created: CreatedUnder | None) -> Context | None:
    """The create span's context when the current span is the one the child was spawned
    under (see the module docstring); else None (the sender's span is the parent)."""
    if created is None:
        return None
    current = trace.get_current_span().get_span_context().span_id
    return created.create_context if current == created.parent_span_id else None


def invoke_agent_span(actor: Actor, address: Address, *, parent_id: str, depth: int,
                      hardware: str, message_type: str, context: Context | None) -> Any:
    """The ``invoke_agent`` span of one handled message (a context manager)."""
    shown = agent_name(type(actor), address.name)
    return tracer.start_as_current_span(
        f"invoke_agent {shown}", context=context, kind=trace.SpanKind.INTERNAL,
        record_exception=False, set_status_on_exception=False,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": AGENT_PROVIDER,
            "openinference.span.kind": "AGENT",
            "gen_ai.agent.name": shown,
            "gen_ai.agent.id": address.actor_id,
            "heterarch.actor.class": type(actor).__qualname__,
            "heterarch.actor.id": address.actor_id,
            "heterarch.parent.id": parent_id,
            "heterarch.pool": address.pool,
            "heterarch.hardware": hardware,
            "heterarch.depth": depth,
            "heterarch.message.type": message_type,
        },
    )
