"""The texts of an RLM run: the model's instructions, the sandbox's prelude, and how a reply
is read (code blocks, ``FINAL(...)``, ``FINAL_VAR(...)``)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from ._messages import ToolSpec

CODE_BLOCK = re.compile(r"```repl[^\n]*\n(.*?)```", re.DOTALL)
FINAL_VAR = re.compile(r"^\s*FINAL_VAR\((.*?)\)\s*$", re.MULTILINE)
FINAL = re.compile(r"^\s*FINAL\((.*)\)\s*$", re.MULTILINE | re.DOTALL)

SYSTEM_PROMPT = """\
You answer a question about a context that is far too large to read at once. The context is \
loaded in a Python REPL as the string variable `context` ({context_chars:,} characters, \
{context_lines:,} lines). Explore it with code, and delegate reading to sub-models:

- `llm_query(prompt: str) -> str`: ask a language model one question (it sees only `prompt`; \
{sub_window}).
- `llm_query_batched(prompts: list[str]) -> list[str]`: many at once, run concurrently. Prefer \
this for chunk-by-chunk work.
- `rlm_query(prompt: str, context: str = "") -> str` and `rlm_query_batched(prompts, contexts)`: \
delegate to a recursive agent like you, with its own REPL and `context`.
- `print(...)` shows you values; output longer than {output_limit:,} characters is truncated.

Write code in fenced blocks that start with ```repl. Variables persist between blocks. When you \
know the answer, end with one of: a line `FINAL(your answer)`; a line `FINAL_VAR(name)` to \
return a REPL variable; or in code `answer["content"] = ...; answer["ready"] = True`.
Recursion depth: {depth} of at most {max_depth}."""

def window_chars(window: int) -> int:
    """Characters of prompt a window of ``window`` tokens takes, as the router counts them (four
    a token, an eighth of the window, at most 4,096 tokens, left for the answer)."""
    return (window - min(4096, window // 8)) * 4


def sub_window_note(windows: dict[str, int]) -> str:
    """What the system prompt says of the sub-models' windows: ``windows`` is pool -> tokens
    (0: unknown) for the pools the run's sub-calls may use."""
    known = {pool: w for pool, w in windows.items() if w > 0}
    if not known:
        return "how much it reads at once depends on its model: keep prompts short"
    smallest, largest = min(known.values()), max(known.values())
    pools = ", ".join(f"{pool} {w:,} tokens" for pool, w in sorted(known.items(),
                                                                   key=lambda kv: kv[1]))
    if smallest == largest:
        size = f"about {window_chars(largest):,} characters"
    else:
        size = (f"about {window_chars(smallest):,} characters on the smallest, "
                f"{window_chars(largest):,} on the largest")
    return (f"its context window holds {size} ({pools}); a longer prompt goes to a model whose "
            "window holds it, and one that fits none comes back at once as an error "
            "`PromptTooLong`: split it")


IMAGE_CONTEXT_NOTE = """
`context` is a list of {count} screenshots (Pillow images; sizes {sizes}). Their text is \
small: models see a whole page scaled down and misread it. Helpers: `crop(img, box)`, \
`zoom(img, box, factor)`, `grid(img, rows, cols)` (a list of (box, crop)), `annotate(img, \
boxes, labels)`. `llm_query(prompt, images=[...])` and `llm_query_batched(prompts, \
images=[[...], ...])` send images (Pillow images, PNG/JPEG bytes or paths): reading a crop goes \
to a small vision model, a prompt about the layout of a whole page to a frontier one."""

#: What the prelude imports, run ahead in a warm sandbox (the import is the slow part; the
#: prelude itself must run once per fresh namespace: it wraps the callbacks).
SANDBOX_IMPORTS = """\
try:
    import heterarch_vision
    del heterarch_vision
except ImportError:
    pass
"""

SANDBOX_PRELUDE = """\
try:
    import heterarch_vision as _heterarch_vision
    _heterarch_vision.install(globals())
except ImportError:  # a sandbox image without Pillow: no image helpers
    pass
import json as _heterarch_json
answer = {"content": "", "ready": False}
def FINAL(value):
    try:  # data stays data (a typed answer is checked as such); anything else as text
        _heterarch_json.dumps(value)
        answer["content"] = value
    except (TypeError, ValueError):
        answer["content"] = str(value)
    answer["ready"] = True
def FINAL_VAR(name):
    FINAL(globals()[name] if isinstance(name, str) else name)
"""


TOOLS_NOTE = """
Tools of the user, callable in the REPL like functions (they run outside it; arguments and \
results are JSON data):
{tools}"""

ANSWER_SCHEMA_NOTE = """
The final answer must be JSON data of this JSON schema: {schema}
Build it in the REPL and finish with `FINAL_VAR(name)` (or `FINAL(value)` in code); it is \
checked, and if it does not fit you are told why and go on."""


def tools_note(tools: Sequence[ToolSpec]) -> str:
    """The system prompt's lines about the user's tools."""
    lines = []
    for tool in tools:
        doc = " ".join(tool.doc.split())
        lines.append(f"- `{tool.name}{tool.signature}`" + (f": {doc}" if doc else ""))
    return TOOLS_NOTE.format(tools="\n".join(lines))


def tool_definitions(tools: Sequence[ToolSpec]) -> str:
    """Code that defines each tool in the REPL as a function calling ``call_tool``."""
    specs = json.dumps([[t.name, t.doc] for t in tools])
    return (
        "def _heterarch_tool(name, doc):\n"
        "    def tool(*args, **kwargs):\n"
        "        return call_tool(name, list(args), kwargs)\n"
        "    tool.__name__ = name\n"
        "    tool.__doc__ = doc\n"
        "    return tool\n"
        f"for _name, _doc in {specs}:\n"
        "    globals()[_name] = _heterarch_tool(_name, _doc)\n"
        "del _name, _doc\n"
    )


def truncate(text: str, limit: int) -> str:
    """Keep the head and the tail of ``text`` with a marker between when over ``limit``."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n... [{len(text) - limit:,} characters truncated] ...\n{text[-tail:]}"

PREVIEW = "The context begins:"
#: How much of a text context goes with the question: a model that sees what the context looks
#: like can write its program at once (one root turn fewer).
PREVIEW_CHARS = 600


def context_preview(context: str, chars: int = PREVIEW_CHARS) -> str:
    """The first ``chars`` characters of a text context, for the question's message."""
    if chars <= 0 or not context:
        return ""
    more = f" ... ({len(context) - chars:,} more characters)" if len(context) > chars else ""
    return f"\n\n{PREVIEW}\n{context[:chars]}{more}"
