"""Nothing paid twice: an RLM program that re-runs part of its batch, with sub-prompts that
share a long prefix, with caching and without it, in one run.

    python bench/cache.py [--prompts 64] [--rerun 0.5] [--prefix-tokens 2000] [--time-scale 1]

The root's program sends ``--prompts`` sub-prompts (``--groups`` task families, each with its
own instruction prefix of about ``--prefix-tokens`` tokens, then a chunk of the context), then
sends the first ``--rerun`` fraction of them again (a program that retries part of its work).
The sub-model is simulated with four replicas behind one endpoint, a prefix cache per replica
(docs/llm.md, "Prompt caching in the simulator"), GPT-5-mini-like prices ($0.25 in, $0.025
cached in, $2 out per million tokens) and a prefill of 4,000 tokens/s.

- with caching: the run's call cache on (identical sub-calls answered once) and the pool sends
  ``prompt_cache_key`` (sub-calls sharing the prefix reach the replica that has it);
- without: the call cache off, and a sub-model with no prefix cache (same speed and prices);
- and, to show what the key does, the call cache on and the prefix caches on but no
  ``prompt_cache_key`` (the replicas behind a plain round-robin balancer).

RESULT lines: ``cache_hit_rate`` (sub-calls answered by the call cache / sub-calls the program
made), ``prompt_cache_hit_rate`` (prompt tokens read from a replica's cache / prompt tokens
sent), ``cost_saved_ratio`` (dollars with caching / without), ``wall_ratio`` (wall time with
caching / without); ``prompt_cache_hit_rate_round_robin`` and ``wall_ratio_key_vs_round_robin``
for the third configuration.
"""

from __future__ import annotations

import argparse
import time
import tomllib
import uuid

import _common  # noqa: F401  (sets sys.path)
import anyio
import msgspec
from _common import result

from actors import Answer, Query, RLMAgent
from heterarch.sim.profiles import Profile, ScriptedResponder
from heterarch.sim.simulator import Simulator, profiles_toml
from runtime import ActorSystem, NatsServer, Worker, parse_config
from runtime._agents import agent_services
from runtime._models.llm import litellm_module
from sandbox import build_image

INSTRUCTIONS = ("You label records. Each record below is one line '<n>: <text>'. For every "
                "record answer one of: location, person, number, abbreviation, entity, "
                "description. Think about hedged wording before you answer. ")

PROGRAM = """```repl
PREFIX = {prefix!r}
chunks = [context[i:i + 1500] for i in range(0, len(context), 1500)][:{prompts}]
prompts = [f"Task family {{i % {groups}}}. " + PREFIX + "\\n" + chunk
           for i, chunk in enumerate(chunks)]
first = llm_query_batched(prompts)
again = llm_query_batched(prompts[:{rerun}])
done = f"{{len(first)}} + {{len(again)}} sub-calls"
print(done)
```"""


def sub_profile(model: str, *, cached: bool) -> Profile:
    return Profile(model, "h100", 0.2, 1000.0, 16, 0.25, 2.0, 1,
                   responder=ScriptedResponder(["location"]), prefix_cache=cached,
                   replicas=4, prefill_tokens_per_s=4000.0, cached_price_factor=0.1,
                   context_window=128_000)


async def one_run(system: ActorSystem, pool: str, *, cache: bool) -> tuple[Answer, float]:
    root = await system.spawn(RLMAgent, pool="sim-root", supervision="temporary")
    try:
        started = time.monotonic()
        answer: Answer = await root.ask(Query(
            question="label the records", context=CONTEXT, max_iterations=3, pools=[pool],
            pool_override=pool, conversation_id=uuid.uuid4().hex, cache_calls=cache),
            timeout=900)
        return answer, time.monotonic() - started
    finally:
        await system.stop(root)


CONTEXT = "\n".join(f"{i}: record number {i} says something about item {i * 7 % 31}"
                    for i in range(4_000))


async def main(prompts: int, rerun_fraction: float, prefix_tokens: int, groups: int,
               time_scale: float) -> None:
    litellm_module()  # imported up front: importing blocks the event loop for seconds
    build_image(if_missing=True, progress=lambda line: None)
    prefix = (INSTRUCTIONS * (prefix_tokens * 4 // len(INSTRUCTIONS) + 1))[:prefix_tokens * 4]
    rerun = int(prompts * rerun_fraction)
    program = PROGRAM.format(prefix=prefix, prompts=prompts, rerun=rerun, groups=groups)
    root = ScriptedResponder([program, "FINAL(done)"])
    profiles = {
        "sim/root": Profile("sim/root", "api", 0.0, 1e9, 8, 0.0, 0.0, 3, responder=root,
                            context_window=272_000),
        "sim/cached": sub_profile("sim/cached", cached=True),
        "sim/plain": sub_profile("sim/plain", cached=False),
        "sim/rr": sub_profile("sim/rr", cached=True),
    }
    async with Simulator(profiles, time_scale=time_scale) as sim:
        config = parse_config(tomllib.loads(profiles_toml(profiles, sim.base_url,
                                                          modules=["actors"])))
        pools = {name: p for name, p in config.pools.items()}
        pools["sim-cached"] = msgspec.structs.replace(pools["sim-cached"],
                                                     prompt_cache_key=True)
        pools["sim-rr"] = msgspec.structs.replace(pools["sim-rr"], prompt_cache_key=False)
        pools["sim-plain"] = msgspec.structs.replace(
            pools["sim-plain"], prompt_cache_key=False,
            cached_input_price_per_mtok=pools["sim-cached"].cached_input_price_per_mtok)
        config = msgspec.structs.replace(config, pools=pools)
        served = list(pools)
        services, pool_services = agent_services(config, served)
        with NatsServer() as server:
            namespace = "cache" + uuid.uuid4().hex[:6]
            async with Worker(config, served, nats=server.url, namespace=namespace,
                              services=services, pool_services=pool_services), \
                    ActorSystem(nats=server.url, namespace=namespace) as system:
                for name in served:
                    await system.node.wait_pool(name)
                without, wall_without = await one_run(system, "sim-plain", cache=False)
                root.calls = 0
                with_cache, wall_with = await one_run(system, "sim-cached", cache=True)
                root.calls = 0
                round_robin, wall_rr = await one_run(system, "sim-rr", cache=True)
    for label, answer in (("without", without), ("with", with_cache), ("rr", round_robin)):
        assert answer.ok and answer.text == "done", (label, answer.stop_reason)
    made = prompts + rerun
    plain, cached = without.usage["sim-plain"], with_cache.usage["sim-cached"]
    assert plain.calls == made, plain
    hit_rate = cached.cache_hits / made
    prompt_hits = sim.cached_tokens["sim/cached"] / max(1, sim.prompt_tokens["sim/cached"])
    print(f"{made} sub-calls ({prompts} then {rerun} again), prefix ~{prefix_tokens} tokens:")
    print(f"  without caching: {plain.calls} paid, ${plain.cost_usd:.5f}, {wall_without:.2f}s")
    print(f"  with caching:    {cached.calls} paid, {cached.cache_hits} from the call cache "
          f"(${cached.cache_saved_usd:.5f} saved), {cached.cached_input_tokens} prompt tokens "
          f"from the replicas' caches (${cached.prompt_cache_saved_usd:.5f} saved), "
          f"${cached.cost_usd:.5f}, {wall_with:.2f}s")
    result("cache_hit_rate", hit_rate)
    result("prompt_cache_hit_rate", prompt_hits)
    result("cost_saved_ratio", cached.cost_usd / plain.cost_usd)
    result("wall_ratio", wall_with / wall_without)
    rr_hits = sim.cached_tokens["sim/rr"] / max(1, sim.prompt_tokens["sim/rr"])
    print(f"  with caching, no prompt_cache_key (round-robin over the replicas): "
          f"${round_robin.usage['sim-rr'].cost_usd:.5f}, {wall_rr:.2f}s")
    result("prompt_cache_hit_rate_round_robin", rr_hits)
    result("wall_ratio_key_vs_round_robin", wall_with / wall_rr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--rerun", type=float, default=0.5,
                        help="fraction of the batch the program sends again")
    parser.add_argument("--prefix-tokens", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=8,
                        help="task families: each has its own long prefix")
    parser.add_argument("--time-scale", type=float, default=1.0)
    a = parser.parse_args()
    anyio.run(main, a.prompts, a.rerun, a.prefix_tokens, a.groups, a.time_scale)
