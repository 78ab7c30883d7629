"""``RLMAgent``: the recursive REPL loop (a Recursive Language Model over heterogeneous pools).

The agent keeps its context as the variable ``context`` in a sandboxed Python REPL. Its model
writes ```repl code blocks; the agent runs them and feeds the (truncated) output back. Code can
call ``llm_query``/``llm_query_batched`` (a plain completion, on the pool the router picks) and
``rlm_query``/``rlm_query_batched`` (a child RLM agent with its own sandbox, until ``max_depth``;
beyond it a plain completion). The run ends with ``FINAL(text)``, ``FINAL_VAR(name)`` or the
sandbox dict ``answer`` with ``answer["ready"] = True`` - or a typed stop reason.
"""

from __future__ import annotations

from .._actor import Actor
from .._supervision import Backoff, SupervisorStrategy
from ._messages import Answer, Query
from ._run import Run


class RLMAgent(Actor):
    """Answers ``Query`` by the recursive REPL loop; see the module docstring."""

    # Dozens of lanes may live on one worker: losing it restarts them all at once, which must
    # not count as a crash loop.
    supervisor_strategy = SupervisorStrategy(max_restarts=512, period=10.0,
                                             backoff=Backoff(initial=0.01, maximum=1.0))

    def __init__(self, output_limit: int = 8000, lanes_per_pool: int = 64) -> None:
        self.output_limit = output_limit
        self.lanes_per_pool = lanes_per_pool

    async def query(self, msg: Query) -> Answer:
        run = Run(self.ctx, msg, output_limit=self.output_limit,
                  lanes_per_pool=self.lanes_per_pool, child_class=RLMAgent)
        return await run.execute()
