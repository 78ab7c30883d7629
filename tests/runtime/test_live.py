"""The live view renders the agent tree (grouping many lanes) and per-pool spend."""

from __future__ import annotations

from rich.console import Console

from runtime._core.protocol import ActorInfo, ModelLoad, NodeInfo, NodeStats
from runtime._observe.live import _render


def test_live_view_groups_lanes_and_shows_spend_since_start() -> None:
    info = NodeInfo(node_id="n", role="worker", host="h", pid=1, started_at=0)
    actors = [ActorInfo(actor_id="root1", actor_class="actors._rlm:RLMAgent", name="",
                        pool="frontier", parent_id="guardian-x", depth=1)]
    actors += [ActorInfo(actor_id=f"c{i}", actor_class="actors._llm_agent:LLMAgent", name="",
                         pool="wafer", parent_id="root1", depth=2) for i in range(10)]
    stats = [NodeStats(info=info, actors=actors, dead_letters={},
                       models={"wafer": ModelLoad(calls=15, tokens=1100, cost_usd=0.3,
                                                  in_flight=3)})]
    console = Console(record=True, width=120)
    console.print(_render(stats, {"wafer": (5, 100, 0.1)}, 0.0, "run"))
    text = console.export_text()
    assert "RLMAgent root1 pool=frontier" in text
    assert "LLMAgent x10 pool=wafer" in text
    assert "1,000" in text and "0.2000" in text  # tokens and dollars since the run started
