"""The live view of ``heterarch rlm``: the growing tree of agents, per-pool load and spend."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from .._core.node import Node
from .._core.protocol import NodeStats


def _render(stats: list[NodeStats], baseline: dict[str, tuple[int, int, float]],
            started: float, title: str) -> Group:
    actors = {a.actor_id: a for s in stats for a in s.actors}
    tree = Tree(f"[bold]{title}[/]  {time.monotonic() - started:.1f}s")
    children: dict[str, list[Any]] = {}
    for actor in actors.values():
        key = actor.parent_id if actor.parent_id in actors else ""
        children.setdefault(key, []).append(actor)

    def add(node: Tree, parent_id: str) -> None:
        groups: dict[tuple[str, str], list[Any]] = {}
        for actor in children.get(parent_id, []):
            name = actor.actor_class.rsplit(":", 1)[-1]
            groups.setdefault((name, actor.pool), []).append(actor)
        for (name, pool), members in sorted(groups.items()):
            if len(members) > 3 and not any(children.get(m.actor_id) for m in members):
                node.add(f"{name} x{len(members)} pool={pool or '-'}")
                continue
            for actor in members:
                branch = node.add(f"{name} [dim]{actor.actor_id[:8]}[/] pool={pool or '-'}")
                add(branch, actor.actor_id)

    add(tree, "")
    table = Table(title="pools (all workers)", expand=False)
    for column in ("pool", "agents", "model calls in flight", "calls", "tokens", "$"):
        table.add_column(column, justify="right" if column != "pool" else "left")
    pools = sorted({a.pool for a in actors.values() if a.pool}
                   | {p for s in stats for p in s.models})
    for pool in pools:
        loads = [s.models[pool] for s in stats if pool in s.models]
        calls0, tokens0, cost0 = baseline.get(pool, (0, 0, 0.0))
        table.add_row(
            pool, str(sum(1 for a in actors.values() if a.pool == pool)),
            str(sum(m.in_flight for m in loads)), str(sum(m.calls for m in loads) - calls0),
            f"{sum(m.tokens for m in loads) - tokens0:,}",
            f"{sum(m.cost_usd for m in loads) - cost0:.4f}",
        )
    return Group(tree, table)


def _totals(stats: list[NodeStats]) -> dict[str, tuple[int, int, float]]:
    out: dict[str, tuple[int, int, float]] = {}
    for s in stats:
        for pool, m in s.models.items():
            c, t, d = out.get(pool, (0, 0, 0.0))
            out[pool] = (c + m.calls, t + m.tokens, d + m.cost_usd)
    return out


async def run_with_live_view(node: Node, work: Callable[[], Awaitable[Any]], *,
                             title: str, console: Console | None = None,
                             interval: float = 0.5) -> Any:
    """Run ``work()`` while showing the cluster's agents and model load (terminal only)."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        return await work()
    started = time.monotonic()
    baseline = _totals(await node.cluster_stats(timeout=0.5))
    result: list[Any] = []
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        async with anyio.create_task_group() as tg:
            async def refresh() -> None:
                while True:
                    stats = await node.cluster_stats(timeout=0.5)
                    live.update(_render(stats, baseline, started, title))
                    await anyio.sleep(interval)

            tg.start_soon(refresh)
            result.append(await work())
            tg.cancel_scope.cancel()
    return result[0]
