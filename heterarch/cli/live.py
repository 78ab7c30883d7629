"""The live view of ``heterarch rlm``: this run's tree of agents, where it stands, its spend.

The run's root agent reports ``RunProgress`` (iteration, phase, usage, failed sub-calls) to the
CLI (``RLM.ask(progress=...)``); the agents come from the cluster's stats, narrowed to the
run's subtree, so concurrent runs on the same workers do not mix. The last frame is drawn
from the ``Answer`` itself: it shows the same numbers as the summary the CLI prints after it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from actors import Answer, PoolUsage, RunProgress
from runtime._core.node import Node
from runtime._core.protocol import ActorInfo, NodeStats


class RunView:
    """What the view knows of one run; ``render`` draws a frame."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.progress: RunProgress | None = None

    def on_progress(self, progress: RunProgress) -> None:
        self.progress = progress

    def _subtree(self, stats: list[NodeStats]) -> dict[str, list[ActorInfo]]:
        """Children by parent id, for the run's root agent and what it spawned."""
        actors = {a.actor_id: a for s in stats for a in s.actors}
        children: dict[str, list[ActorInfo]] = {}
        for actor in actors.values():
            children.setdefault(actor.parent_id, []).append(actor)
        root = self.progress.agent_id if self.progress is not None else ""
        out: dict[str, list[ActorInfo]] = {"": [actors[root]] if root in actors else []}
        todo = list(out[""])
        while todo:
            actor = todo.pop()
            kids = children.get(actor.actor_id, [])
            out[actor.actor_id] = kids
            todo.extend(kids)
        return out

    def render(self, stats: list[NodeStats], elapsed: float, *,
               answer: Answer | None = None) -> Group:
        """A frame: the header (iteration, phase, errors), the run's agents, its pools."""
        p = self.progress
        usage: dict[str, PoolUsage] = dict(answer.usage if answer is not None
                                           else p.usage if p is not None else {})
        errors = sum(u.errors for u in usage.values())
        if answer is not None:
            state = (f"done: {answer.stop_reason}, {answer.iterations} iterations, "
                     f"${answer.cost_usd:.4f}")
        elif p is not None:
            state = f"iteration {p.iteration}/{p.max_iterations}: {p.phase}"
            if p.sub_calls_started and "sub-calls" not in p.phase:
                state += f" ({p.sub_calls_done}/{p.sub_calls_started} sub-calls done)"
        else:
            state = "starting"
        if errors:
            state += f"  [red]{errors} failed sub-calls[/]"
        tree = Tree(f"[bold]{self.title}[/]  {elapsed:.1f}s  {state}")
        children = self._subtree(stats)
        agents_per_pool: dict[str, int] = {}
        for members in children.values():
            for a in members:
                agents_per_pool[a.pool] = agents_per_pool.get(a.pool, 0) + 1
        _add(tree, "", children)
        in_flight: dict[str, int] = {}
        for s in stats:
            for pool, m in s.models.items():
                in_flight[pool] = in_flight.get(pool, 0) + m.in_flight
        table = Table(title="this run, per pool", expand=False)
        sub_calls = dict(p.pools) if p is not None and answer is None else {}
        for column in ("pool", "agents", "sub-calls done/sent", "calls", "tokens", "$",
                       "errors", "in flight (all runs)"):
            table.add_column(column, justify="left" if column == "pool" else "right")
        for pool in sorted(set(usage) | set(agents_per_pool) | set(sub_calls) - {""}):
            u = usage.get(pool, PoolUsage())
            done, sent = sub_calls.get(pool, (0, 0))
            table.add_row(pool, str(agents_per_pool.get(pool, 0)),
                          f"{done}/{sent}" if sent else "-", str(u.calls),
                          f"{u.tokens:,}", f"{u.cost_usd:.4f}", str(u.errors),
                          str(in_flight.get(pool, 0)))
        return Group(tree, table)


def _add(node: Tree, parent_id: str, children: dict[str, list[ActorInfo]]) -> None:
    """Agents under ``parent_id``; more than three alike leaves fold into one line."""
    groups: dict[tuple[str, str], list[ActorInfo]] = {}
    for actor in children.get(parent_id, []):
        name = actor.name or actor.actor_class.rsplit(":", 1)[-1]
        groups.setdefault((name, actor.pool), []).append(actor)
    for (name, pool), members in sorted(groups.items()):
        if len(members) > 3 and not any(children.get(m.actor_id) for m in members):
            node.add(f"{name} x{len(members)} pool={pool or '-'}")
            continue
        for actor in members:
            branch = node.add(f"{name} [dim]{actor.actor_id[:8]}[/] pool={pool or '-'}")
            _add(branch, actor.actor_id, children)


async def run_with_live_view(node: Node,
                             work: Callable[[Callable[[RunProgress], None] | None],
                                            Awaitable[Answer]], *,
                             title: str, console: Console | None = None,
                             interval: float = 0.5,
                             view: RunView | None = None) -> tuple[Answer, float]:
    """Run ``work(on_progress)`` while showing the run (terminal only: elsewhere
    ``work(None)``); ``on_progress`` takes the root's ``RunProgress`` reports (``RLM.ask``'s
    ``progress=``). Returns the answer and the wall time the last frame showed."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    if not console.is_terminal:
        answer = await work(None)
        return answer, time.monotonic() - started
    view = view or RunView(title)
    stats: list[NodeStats] = []
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        async with anyio.create_task_group() as tg:
            async def refresh() -> None:
                nonlocal stats
                while True:
                    stats = await node.cluster_stats(timeout=0.5)
                    live.update(view.render(stats, time.monotonic() - started))
                    await anyio.sleep(interval)

            tg.start_soon(refresh)
            try:
                answer = await work(view.on_progress)
            finally:
                tg.cancel_scope.cancel()
        wall = time.monotonic() - started
        live.update(view.render(stats, wall, answer=answer), refresh=True)
    return answer, wall


def interrupted_line(after_s: float, progress: RunProgress | None) -> str:
    """The one line ``heterarch rlm`` prints when interrupted: when, and what was spent."""
    usage = progress.usage if progress is not None else {}
    calls = sum(u.calls for u in usage.values())
    cancelled = sum(u.cancelled_calls for u in usage.values())
    tokens = sum(u.tokens + u.lost_tokens + u.cancelled_tokens for u in usage.values())
    cost = sum(u.cost_usd + u.lost_cost_usd + u.cancelled_cost_usd for u in usage.values())
    known = "" if progress is not None else " (no usage reported yet)"
    extra = f", {cancelled} cancelled in flight (at their estimate)" if cancelled else ""
    return (f"heterarch: interrupted after {after_s:.1f}s: {calls} model calls{extra}, "
            f"{tokens:,} tokens, ${cost:.4f} so far{known}")


def run_summary(answer: Answer, wall: float) -> list[str]:
    """The lines the CLI prints after a run: the same numbers as the last frame."""
    lines = [f"[{answer.stop_reason}] {answer.iterations} iterations, {wall:.1f}s, "
             f"${answer.cost_usd:.4f}"]
    for pool, u in sorted(answer.usage.items()):
        lines.append(f"  {pool:12} calls={u.calls} tokens={u.tokens:,} ${u.cost_usd:.4f}"
                     + (f" errors={u.errors}" if u.errors else "")
                     + (f" lost={u.lost_calls} (${u.lost_cost_usd:.4f} estimated)"
                        if u.lost_calls else "")
                     + (f" cached={u.cache_hits} (${u.cache_saved_usd:.4f} saved)"
                        if u.cache_hits else "")
                     + (f" prompt-cache={u.cached_input_tokens:,} tokens "
                        f"(${u.prompt_cache_saved_usd:.4f} saved)"
                        if u.cached_input_tokens else ""))
    return lines
