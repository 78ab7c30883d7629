"""What a pool's model can take: its context window, from the config or litellm's model map.

litellm is imported only when a pool with a model leaves ``context_window`` at 0 (its import
takes seconds); ``import runtime`` never imports it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .._config import PoolConfig

__all__ = ("CHARS_PER_TOKEN", "estimate_tokens", "model_info", "pool_window")

#: Characters per token for estimates before a call (English text; the simulator's own rule).
CHARS_PER_TOKEN = 4


@cache
def model_info(model: str) -> dict[str, Any]:
    """litellm's entry for ``model`` (windows, prices), or {} where it does not know it."""
    if not model:
        return {}
    from .litellm_path import litellm_module

    try:
        info = litellm_module().get_model_info(model)
    except Exception:  # not in the map: nothing known
        return {}
    return dict(info) if info else {}


def pool_window(pool: PoolConfig) -> int:
    """The pool's context window in tokens: its ``context_window``, else litellm's
    ``max_input_tokens`` (or ``max_tokens``) for its model, else 0 (unknown: no check)."""
    if pool.context_window:
        return pool.context_window
    if not pool.model:
        return 0
    info = model_info(pool.model)
    window = info.get("max_input_tokens") or info.get("max_tokens") or 0
    return int(window) if isinstance(window, int | float) else 0


def estimate_tokens(messages: list[dict[str, Any]] | str, max_tokens: int | None = 0) -> int:
    """Tokens a call needs in the window: its text at ``CHARS_PER_TOKEN``, plus the answer's
    ``max_tokens``. Images count by their data URL's length (a rough, generous bound)."""
    if isinstance(messages, str):
        chars = len(messages)
    else:
        chars = 0
        for message in messages:
            content = message.get("content", "")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict):
                        chars += len(str(part.get("text", "")))
    return -(-chars // CHARS_PER_TOKEN) + (max_tokens or 0)
