"""The examples in docs/sandbox.md are code that runs (on the real Docker engine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"


def doc_examples() -> dict[str, Any]:
    """Every ```python block of the page, run in one namespace."""
    namespace: dict[str, Any] = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


async def test_the_examples_in_docs_sandbox_md_run(sandbox_image: str, tmp_path: Path) -> None:
    examples = doc_examples()
    assert sandbox_image == examples["DockerSandbox"]().image  # the image the docs use
    book = tmp_path / "book.txt"
    book.write_text("page\n", encoding="utf-8")
    assert await examples["example_basics"](book) == "1200000 HI a huge"
    assert await examples["example_pool"]() == "4\n"
