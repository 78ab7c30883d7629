"""The vision demo task: questions about generated shop pages, and the root model that solves it.

``make_task(seed, pages)`` renders the pages and asks questions whose answers are small text;
``score`` is the fraction answered exactly. ``VisionRootResponder`` plays the root model of an
RLM run over the screenshots (a rule-based stand-in, like ``oolong.RootResponder``): it looks
at the context, then runs one program that decomposes the task the way the talk describes:

1. *visual parsing* (global): one call per page on the whole screenshot asks for its layout,
   saying how high the text is that tells its blocks apart (``text_px``): the router sends it
   to the cheapest vision pool that reads text of that height at the size it sees the page;
2. *zooming*: every block but the header is cropped, zoomed 2x and read by a sub-call
   (crop-and-read: the small vision pool);
3. *textual reasoning*: the program indexes the transcripts (card name -> price, badge,
   button; form fields in order; the shipping line) and answers each question from them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import webpages

QUESTIONS_HEADER = "Answer each question about the screenshots, one `<n>: <answer>` line each:"

_ASKS = [
    (re.compile(r"price of the (?P<p>.+?) on page (?P<i>\d+)"), "price:{p}"),
    (re.compile(r"badge next to the (?P<p>.+?) on page (?P<i>\d+)"), "badge:{p}"),
    (re.compile(r"button under the (?P<p>.+?) on page (?P<i>\d+)"), "button:{p}"),
    (re.compile(r"third checkout field on page (?P<i>\d+)"), "field:3"),
    (re.compile(r"shipping line in the footer of page (?P<i>\d+)"), "shipping"),
]

EXPLORE = """Let me look at the screenshots first.
```repl
print(len(context), [image.size for image in context])
```"""

PROGRAM = """The text is small: I will find each page's blocks, zoom into each and read it.
The blocks are told apart by their titles (product names, about 13 px high): the layout
calls say so (`text_px`), so the router sends each page to a model that reads that size.
```repl
import re
asked = {asked!r}
layouts = llm_query_batched(
    ["Give the layout of this page: one `role: left,top,right,bottom` line per block."]
    * len(context), images=[[page] for page in context], text_px=13)
blocks = []
for p, text in enumerate(layouts):
    for line in text.splitlines():
        m = re.match(r"(\\w+): (\\d+),(\\d+),(\\d+),(\\d+)$", line.strip())
        if m and m.group(1) != "header":
            blocks.append((p, m.group(1), tuple(int(v) for v in m.groups()[1:])))
reads = llm_query_batched(
    ["Read all text in this crop, top to bottom, one `kind: text` line per item."]
    * len(blocks), images=[[zoom(context[p], box, 2)] for p, role, box in blocks])
found = {{}}
for (p, role, box), text in zip(blocks, reads):
    items = [line.split(": ", 1) for line in text.splitlines() if ": " in line]
    if role == "card":
        name = next((v for k, v in items if k == "name"), "").lower()
        for k, v in items:
            if k in ("price", "badge", "button"):
                found[(p, k + ":" + name)] = v
    elif role == "form":
        for n, v in enumerate([v for k, v in items if k == "field"], 1):
            found[(p, "field:" + str(n))] = v
    elif role == "footer":
        for k, v in items:
            if v.startswith("Shipping"):
                found[(p, "shipping")] = v
answers = [found.get((p, key), "unknown") for p, key in asked]
print(len(layouts), "layouts,", len(blocks), "blocks read,", len(answers), "answers")
answer["content"] = "\\n".join(str(n) + ": " + a for n, a in enumerate(answers, 1))
answer["ready"] = True
```"""


@dataclass(frozen=True)
class VisionTask:
    pages: list[webpages.Page]
    screenshots: list[bytes]  # PNG, one per page
    questions: list[webpages.Question]

    @property
    def prompt(self) -> str:
        lines = [f"{n}. {q.text}" for n, q in enumerate(self.questions, 1)]
        return "\n".join([QUESTIONS_HEADER, *lines])


def make_task(seed: int = 11, pages: int = 8, per_page: int = 2) -> VisionTask:
    generated = webpages.generate_pages(seed, pages)
    return VisionTask(generated, [webpages.render(p) for p in generated],
                      webpages.questions(generated, seed, per_page))


def score(text: str, task: VisionTask) -> float:
    """The fraction of questions whose answer line is exactly right."""
    got = dict(re.findall(r"^\s*(\d+): (.*?)\s*$", text, re.M))
    right = sum(got.get(str(n)) == q.answer for n, q in enumerate(task.questions, 1))
    return right / len(task.questions) if task.questions else 0.0


def parse_questions(text: str) -> list[tuple[int, str]]:
    """``(page, element key)`` per numbered question (``("", "")`` -> key ``unknown``)."""
    asked = []
    for line in re.findall(r"^\s*\d+\. (.*)$", text, re.M):
        for pattern, key in _ASKS:
            m = pattern.search(line)
            if m:
                asked.append((int(m.group("i")), key.format(p=m.groupdict().get("p") or "")))
                break
        else:
            asked.append((-1, "unknown"))
    return asked


class VisionRootResponder:
    """The root model of a vision RLM run: explore, then the program (module docstring)."""

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        question = next((m["content"] for m in messages if m.get("role") == "user"
                         and QUESTIONS_HEADER in m.get("content", "")), "")
        asked = parse_questions(question)
        if not asked:
            return "I cannot parse these questions.\nFINAL(unknown)"
        turns = sum(1 for m in messages if m.get("role") == "assistant")
        if turns == 0:
            return EXPLORE
        if turns <= 2:
            return PROGRAM.format(asked=asked)
        return "The program did not finish.\nFINAL(unknown)"
