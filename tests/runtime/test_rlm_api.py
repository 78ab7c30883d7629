"""``RLM``, the one call: embedded (it starts and stops a nats-server, a worker and Docker
sandboxes, and leaves none of them), blocking, against a cluster of worker processes whose
root worker is killed mid-run (the JSONL log is read back as it stood), and from the CLI with
the config as the single source (namespace, NATS URL). Real parts: nats-server, Docker, the
simulator over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import docker
import pytest

from heterarch.sim.profiles import default_profiles, profiles_toml
from heterarch.sim.simulator import serve_in_thread
from runtime import RLM, ContextNotText, NatsServer, RuntimeConfig, parse_config, read_log
from sandbox import build_image
from sandbox._docker import OWNER_LABEL
from transports import new_id

pytestmark = [pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[2]

EXPLORE = '```repl\nn = len(context)\nseen = llm_query("say hi")\nprint(n, seen)\n```'
FINISH = "FINAL(the context has {n} characters)"


class Program:
    """The root's model: code first; once it sees a cell's output, the final answer (built
    from the number the cell printed). Sub-calls answer ``hi: <prompt>``. ``gate``: the first
    final turn waits for it (the test kills a worker meanwhile)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        if not any(m.get("role") == "system" for m in messages):
            return f"hi: {messages[-1]['content']}"
        last = str(messages[-1]["content"])
        if "[cell 1 output]" not in last:
            return EXPLORE
        if self.gate is not None:
            gate, self.gate = self.gate, None
            gate.wait(120)
        return FINISH.format(n=last.split("\n")[1].split()[0])


@pytest.fixture
def simulator() -> Iterator[tuple[str, dict[str, object]]]:
    profiles = {name: dataclasses.replace(p, responder=Program())
                for name, p in default_profiles().items()
                if name in ("sim/frontier", "sim/wafer-small")}
    with serve_in_thread(profiles, time_scale=0.0) as url:
        yield url, profiles  # type: ignore[misc]


def _config(url: str, profiles: dict[str, object], *, namespace: str, extra: str = "",
            modules: Sequence[str] = ()) -> RuntimeConfig:
    text = f'namespace = "{namespace}"\n{extra}\n' + profiles_toml(
        profiles, url, modules=list(modules))  # type: ignore[arg-type]
    return parse_config(tomllib.loads(text))


def _our_containers() -> list[str]:
    client = docker.from_env()
    try:
        owner = f"{OWNER_LABEL}={socket.gethostname()}-{os.getpid()}"
        return [c.id for c in client.containers.list(all=True, sparse=True,
                                                     filters={"label": owner})]
    finally:
        client.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.anyio
async def test_embedded_one_call_answers_and_leaves_nothing(
        simulator: tuple[str, dict[str, object]], tmp_path: Path) -> None:
    build_image(if_missing=True, progress=lambda line: None)
    url, profiles = simulator
    config = _config(url, profiles, namespace="embedded")  # no modules, no nats: embedded
    log = tmp_path / "run.jsonl"
    context = "x" * 12_345
    async with RLM(config, root_pool="frontier", log=log) as rlm:
        assert rlm.embedded and rlm.server is not None and rlm.server.process is not None
        pid, store = rlm.server.process.pid, rlm.server.store_dir
        answer = await rlm.ask("How long is the context?", context=context)
        assert _our_containers()  # the worker's spare sandbox is up
    assert answer.ok and answer.text == "the context has 12345 characters"
    assert answer.stop_reason == "final" and answer.iterations == 2
    assert not _alive(pid) and not store.exists()  # no server, no store left
    assert _our_containers() == []  # no sandbox container left
    first, last = answer.trajectory
    assert first.iteration == 1 and first.reply == EXPLORE and first.pool == "frontier"
    assert first.code == [EXPLORE.split("\n", 1)[1].rsplit("```", 1)[0]]
    assert first.output == "[cell 1 output]\n12345 hi: say hi\n"
    [call] = first.sub_calls
    assert call.kind == "llm" and call.prompt == "say hi" and call.reply == "hi: say hi"
    assert call.pool in config.pools and call.input_tokens > 0 and call.latency_s > 0
    assert first.input_tokens > 0 and first.cost_usd > 0
    assert last.reply == "FINAL(the context has 12345 characters)" and last.output == ""
    events = read_log(log)
    assert [e["event"] for e in events] == ["run", "iteration", "iteration", "answer"]
    assert events[1]["reply"] == EXPLORE and events[1]["sub_calls"][0]["reply"] == "hi: say hi"
    assert events[3]["text"] == answer.text and events[0]["chars"] == len(context)


def test_run_blocks_in_a_script_and_in_a_notebook(simulator: tuple[str, dict[str, object]],
                                                  tmp_path: Path) -> None:
    url, profiles = simulator
    config = _config(url, profiles, namespace="blocking", extra='sandbox = "process"')
    path = tmp_path / "context.txt"
    path.write_text("y" * 77)
    answer = RLM(config, root_pool="frontier").run("How long?", context=path)
    assert answer.text == "the context has 77 characters"

    async def notebook_cell() -> str:  # an event loop already runs in this thread
        return RLM(config, root_pool="frontier").completion("How long?", context="z" * 5).text

    assert asyncio.run(notebook_cell()) == "the context has 5 characters"


@pytest.mark.anyio
async def test_bytes_that_are_not_text_are_refused(simulator: tuple[str, dict[str, object]],
                                                   tmp_path: Path) -> None:
    url, profiles = simulator
    config = _config(url, profiles, namespace="nottext", extra='sandbox = "process"')
    binary = tmp_path / "random.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    async with RLM(config, root_pool="frontier") as rlm:
        with pytest.raises(ContextNotText, match=r"byte 128: invalid start byte"):
            await rlm.ask("What is in it?", context=binary)
        with pytest.raises(ContextNotText, match="control characters"):
            await rlm.ask("What is in it?", context=b"\x00\x01\x02" * 100)
        answer = await rlm.ask("How long?", context="caf\u00e9".encode())
    assert answer.text == "the context has 4 characters"


@pytest.mark.anyio
@pytest.mark.slow
async def test_cluster_of_worker_processes_and_the_log_after_the_roots_worker_dies(
        nats_server: NatsServer, tmp_path: Path) -> None:
    build_image(if_missing=True, progress=lambda line: None)
    gate = threading.Event()
    profiles = {name: dataclasses.replace(p, responder=Program(gate))
                for name, p in default_profiles().items()
                if name in ("sim/frontier", "sim/wafer-small")}
    namespace = "cl" + new_id()[:8]
    log = tmp_path / "run.jsonl"
    with serve_in_thread(profiles, time_scale=0.0) as url:
        config_path = tmp_path / "pools.toml"
        config_path.write_text(f'namespace = "{namespace}"\nnats = "{nats_server.url}"\n'
                               + profiles_toml(profiles, url, modules=["actors"]))

        def worker(pool: str) -> subprocess.Popen[bytes]:  # no --nats: the config's
            return subprocess.Popen(
                [sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool, "--config",
                 str(config_path)], cwd=ROOT, stdout=subprocess.DEVNULL)

        workers = [worker("frontier"), worker("frontier"), worker("wafer")]
        try:
            async with RLM(config_path, root_pool="frontier", log=log) as rlm:
                assert not rlm.embedded and rlm.namespace == namespace
                for pool in ("frontier", "wafer"):
                    await rlm.system.node.wait_pool(pool)
                async with anyio.create_task_group() as tg:
                    answers = []

                    async def ask() -> None:
                        answers.append(await rlm.ask("How long?", context="w" * 321))

                    tg.start_soon(ask)
                    with anyio.fail_after(120):  # the first iteration is in the log
                        while not log.exists() or not any(
                                e["event"] == "iteration" for e in read_log(log)):
                            await anyio.sleep(0.05)
                    root_node = next(s.info.pid for s in await rlm.system.node.cluster_stats()
                                     for a in s.actors if a.name == "rlm-root")
                    victim = next(w for w in workers if w.pid == root_node)
                    victim.kill()
                    victim.wait()
                    seen = read_log(log)  # what the run left when its worker died
                    gate.set()
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(30)
    assert [e["event"] for e in seen] == ["run", "iteration"]
    assert seen[1]["reply"] == EXPLORE and seen[1]["output"].endswith("321 hi: say hi\n")
    [answer] = answers
    assert answer.ok and answer.text == "the context has 321 characters"
    events = read_log(log)
    assert events[-1]["event"] == "answer" and events[-1]["text"] == answer.text


@pytest.mark.slow
def test_cli_reads_namespace_and_nats_from_the_config(
        nats_server: NatsServer, simulator: tuple[str, dict[str, object]],
        tmp_path: Path) -> None:
    url, profiles = simulator
    namespace = "cfg" + new_id()[:8]
    config_path = tmp_path / "pools.toml"
    config_path.write_text(f'namespace = "{namespace}"\nnats = "{nats_server.url}"\n'
                           'sandbox = "process"\n'
                           + profiles_toml(profiles, url, modules=["actors"]))  # type: ignore[arg-type]
    context = tmp_path / "context.txt"
    context.write_text("v" * 99)
    log = tmp_path / "run.jsonl"
    worker = subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "frontier", "--pool",
         "wafer", "--config", str(config_path)], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        env = {k: v for k, v in os.environ.items()
               if k not in ("HETERARCH_NATS_URL", "NATS_URL")}
        done = subprocess.run(
            [sys.executable, "-m", "heterarch.cli", "rlm", "How long?", "--context",
             str(context), "--config", str(config_path), "--root-pool", "frontier", "--json",
             "--log", str(log)], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=300)
    finally:
        worker.terminate()
        worker.wait(30)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["text"] == "the context has 99 characters" and answer["ok"]
    assert [step["iteration"] for step in answer["trajectory"]] == [1, 2]
    events = read_log(log)
    assert events[0]["namespace"] == namespace and not events[0]["embedded"]
    assert events[-1]["event"] == "answer"
