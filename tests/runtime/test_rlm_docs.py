"""Every example of docs/rlm.md runs: each Python block as written, in a folder with a
``pools.toml`` for the simulated pools (over HTTP) and a ``notes.txt``; the cluster example
against a real nats-server and a worker process; each TOML block is a valid config."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from heterarch.sim.profiles import default_profiles, profiles_toml
from heterarch.sim.simulator import serve_in_thread
from runtime import NatsServer, parse_config
from transports import new_id

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "rlm.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


class DocsModel:
    """The root: code that reads the context (and calls a tool the prompt lists), then a
    final answer (of the type the prompt asks for, if any). Sub-calls: ``2``."""

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        system = [str(m["content"]) for m in messages if m.get("role") == "system"]
        if not system:
            return "2"
        if not any(m.get("role") == "assistant" for m in messages):
            tool = "print(population('Paris'))\n" if "`population(" in system[0] else ""
            return f"```repl\nprint(len(context), llm_query('count Paris'))\n{tool}```"
        if "JSON data of this JSON schema" in system[0]:
            return '```repl\nv = {"city": "Paris", "mentions": 2}\n```\nFINAL_VAR(v)'
        return "FINAL(2)"


@pytest.fixture
def docs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    profiles = {name: dataclasses.replace(p, responder=DocsModel())
                for name, p in default_profiles().items()
                if name in ("sim/frontier", "sim/wafer-small")}
    with serve_in_thread(profiles, time_scale=0.0) as url:
        (tmp_path / "pools.toml").write_text(
            f'namespace = "d{new_id()[:10]}"\nsandbox = "process"\n'
            + profiles_toml(profiles, url, modules=["actors"]))
        (tmp_path / "notes.txt").write_text("Paris: late train\nLyon: fine\nParis: rain\n")
        monkeypatch.chdir(tmp_path)
        yield tmp_path


def test_the_page_has_its_examples() -> None:
    assert len(blocks("python")) == 5 and len(blocks("toml")) == 1


@pytest.mark.parametrize("index", [0, 1, 3, 4])
def test_example_runs(docs_folder: Path, index: int,
                      capsys: pytest.CaptureFixture[str]) -> None:
    code = blocks("python")[index]
    exec(compile(code, f"docs/rlm.md example {index + 1}", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert printed.strip()
    if index == 3:
        assert printed.splitlines()[0] == "Paris 2 " + '{"city": "Paris", "mentions": 2}'
    if index == 4:
        assert (docs_folder / "run.jsonl").exists() and "answer" in printed


def test_cluster_example_runs(docs_folder: Path, nats_server: NatsServer,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NATS_URL", nats_server.url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "frontier", "--pool",
         "wafer", "--config", "pools.toml", "--nats", nats_server.url],
        cwd=docs_folder, stdout=subprocess.DEVNULL, env={**_env(), "PYTHONPATH": str(ROOT)})
    try:
        exec(compile(blocks("python")[2], "docs/rlm.md example 3", "exec"),
             {"__name__": "__main__"})
    finally:
        worker.terminate()
        worker.wait(30)
    assert capsys.readouterr().out.strip() == "2"


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_toml_example_is_a_valid_config() -> None:
    [toml] = blocks("toml")
    config = parse_config(tomllib.loads(toml), source="docs/rlm.md")
    assert [r.depth for r in config.rules] == [0, 1]
    assert config.sandbox_settings.memory == "2g" and config.connect.user == "client"
