"""An OOLONG-style long-context task with exact answers, and the simulated models that solve it.

``generate_task`` writes thousands of dated records with user ids, each about one of six
categories; easy records say what they are plainly, hard ones hedge ("reportedly", "maybe").
Questions ask how many records (of some users) are about a category; the generator knows the
answer. ``score`` is OOLONG's ``0.75 ** |error|``.

The simulated models (used by ``runtime.simulate``):

* ``RootResponder`` plays the root model of an RLM run. It reads the question from the chat and
  answers, turn by turn: look at the context; run a chunk-and-aggregate program that routes
  ambiguous records to careful sub-calls; finish by setting ``answer["ready"]``.
* ``LabelResponder`` plays a sub-model: it labels the numbered records in its prompt by rule,
  and mislabels some of them with a probability set by the pool's accuracy profile and each
  record's difficulty (deterministic: seeded by the record and the model).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

CATEGORIES = ("location", "entity", "description", "numeric value", "human being",
              "abbreviation")

_EASY = {
    "location": ["Which city hosts the {x} festival?", "Where is the river {x} located?",
                 "In which country is {x} mountain?"],
    "entity": ["What animal is called a {x}?", "Which instrument is the {x}?",
               "What product is sold as {x}?"],
    "description": ["What does the word {x} mean?", "Describe how {x} works.",
                    "What is the definition of {x}?"],
    "numeric value": ["How many people live in {x}?", "What year was {x} founded?",
                      "How tall is the {x} tower in meters?"],
    "human being": ["Who wrote the novel {x}?", "Who invented the {x}?",
                    "Which person founded {x}?"],
    "abbreviation": ["What does the acronym {x} stand for?", "What is {x} short for?",
                     "Expand the abbreviation {x}."],
}
_HARD = {
    "location": ["Reportedly {x} is somewhere people go, maybe near the coast?",
                 "Some say {x} sits between two old roads, possibly?"],
    "entity": ["Reportedly {x} is a thing one might own, maybe a tool?",
               "Some say {x} is kept in a box, possibly a device?"],
    "description": ["Reportedly {x} is about how something feels, maybe its nature?",
                    "Some say {x} explains a manner, possibly a style?"],
    "numeric value": ["Reportedly {x} has a size one could measure, maybe a count?",
                      "Some say {x} comes to a figure, possibly a total?"],
    "human being": ["Reportedly {x} is someone remembered, maybe a writer?",
                    "Some say {x} was a figure of a town, possibly its mayor?"],
    "abbreviation": ["Reportedly {x} is written short, maybe for a long name?",
                     "Some say {x} is letters standing in, possibly initials?"],
}
_WORDS = ["alder", "brisk", "corvo", "delta", "ember", "fjord", "gable", "heron", "ivory",
          "jumbo", "karst", "lumen", "mirth", "nadir", "oaken", "pylon", "quill", "raven",
          "sable", "tundra", "umber", "vapor", "willow", "xenon", "yarrow", "zephyr"]
HEDGES = re.compile(r"\b(Reportedly|maybe|possibly|Some say)\b")


@dataclass(frozen=True)
class Record:
    date: str
    user: int
    text: str
    label: str
    hard: bool

    def line(self) -> str:
        return f"Date: {self.date} || User: {self.user} || Instance: {self.text}"


@dataclass(frozen=True)
class Question:
    """One question with its exact answer. ``kind``: ``"count"`` (how many records [of some
    users] are about a category), ``"compare"`` (which of two users has more; the answer is
    the user id as text) or ``"temporal"`` (how many about a category since a year)."""

    text: str
    users: tuple[int, ...]  # empty: all users
    category: str
    answer: int | str
    kind: str = "count"
    since_year: int = 0


QUESTION_KINDS = ("count", "compare", "temporal")


@dataclass(frozen=True)
class Task:
    context: str
    records: tuple[Record, ...]
    questions: tuple[Question, ...]


def generate_task(*, n_records: int = 3000, n_users: int = 40, hard_fraction: float = 0.3,
                  seed: int = 7, target_chars: int = 0) -> Task:
    """A seeded task: ``n_records`` dated records of ``n_users`` users, ``hard_fraction`` of
    them hedged, and six questions (per category of the first three: some users, all users).

    Records are about 100 characters; ``target_chars`` pads each line with spaces so that the
    context comes to about that size (``target_chars=1_000_000`` for the demo's ~1 MB).
    The same arguments always give the same task."""
    rng = random.Random(seed)
    users = sorted(rng.sample(range(10_000, 99_999), n_users))
    records = []
    for _ in range(n_records):
        label = rng.choice(CATEGORIES)
        hard = rng.random() < hard_fraction
        template = rng.choice((_HARD if hard else _EASY)[label])
        name = "-".join(rng.choice(_WORDS) for _ in range(2))
        text = template.format(x=name)
        date = f"20{rng.randint(19, 24)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        records.append(Record(date, rng.choice(users), text, label, hard))
    header = (
        "The following lines contain general-knowledge questions, one per line. Each line has "
        "a date, a user id and an instance. Each instance can be classified as one of: "
        + ", ".join(CATEGORIES) + ".\n"
    )
    lines = [r.line() for r in records]
    if target_chars:
        pad = max(0, target_chars // max(1, n_records) - len(lines[0]) - 1)
        lines = [line + " " * pad for line in lines]
    context = header + "\n".join(lines) + "\n"
    questions = []
    for category in CATEGORIES[:3]:
        subset = tuple(sorted(rng.sample(users, max(2, n_users // 2))))
        count = sum(1 for r in records if r.label == category and r.user in subset)
        who = ", ".join(str(u) for u in subset)
        questions.append(Question(
            f"How many records of users {who} are about a {category}?", subset, category, count
        ))
        total = sum(1 for r in records if r.label == category)
        questions.append(Question(
            f"How many records are about a {category}?", (), category, total
        ))
    for category in CATEGORIES[3:]:
        questions.append(_comparison(rng, records, users, category))
        year = rng.randint(2021, 2023)
        since = sum(1 for r in records if r.label == category and int(r.date[:4]) >= year)
        questions.append(Question(
            f"How many records about a {category} are dated {year} or later?", (), category,
            since, kind="temporal", since_year=year,
        ))
    return Task(context, tuple(records), tuple(questions))


def _comparison(rng: random.Random, records: list[Record], users: list[int],
                category: str) -> Question:
    """Two users whose counts about ``category`` differ (so the answer is one user)."""
    for _ in range(100):
        a, b = sorted(rng.sample(users, 2))
        counts = {u: sum(1 for r in records if r.label == category and r.user == u)
                  for u in (a, b)}
        if counts[a] != counts[b]:
            break
    winner = max((a, b), key=lambda u: counts[u])
    return Question(f"Which of users {a} and {b} has more records about a {category}? "
                    "Answer with the user id.", (a, b), category, str(winner), kind="compare")


def score(predicted: str | int | None, truth: int | str) -> float:
    """OOLONG's score: for a count ``0.75 ** |error|``; for a user id (``truth`` is text)
    1 when it is the first number of the answer; 0 when no number can be read."""
    if predicted is None:
        return 0.0
    match = re.search(r"-?\d+", str(predicted))
    if match is None:
        return 0.0
    if isinstance(truth, str):
        return float(match.group() == truth)
    return float(0.75 ** abs(int(match.group()) - truth))


# -- the simulated models ------------------------------------------------------------------------
QUESTION = re.compile(
    r"How many records(?: of users (?P<users>[\d,\s]+))? are about an? (?P<category>[a-z ]+)\?"
)
COMPARE = re.compile(
    r"Which of users (?P<users>\d+ and \d+) has more records about an? (?P<category>[a-z ]+)\?"
)
TEMPORAL = re.compile(
    r"How many records about an? (?P<category>[a-z ]+) are dated (?P<year>\d{4}) or later\?"
)
QUESTION_FORMS = ("How many records [of users U1, U2, ...] are about a <category>?",
                  "Which of users U1 and U2 has more records about a <category>?",
                  "How many records about a <category> are dated <year> or later?")
CANNOT_PARSE = ("I cannot parse this question: this simulated model understands only the "
                "generator's question forms (" + "; ".join(QUESTION_FORMS) + ").\n"
                "FINAL(cannot answer: the simulated model did not understand the question)")


@dataclass(frozen=True)
class Parsed:
    """What the root model reads from a question."""

    users: frozenset[int]
    category: str
    since_year: int = 0
    compare: bool = False


def parse_question(text: str) -> Parsed | None:
    """The question in ``text`` in one of ``QUESTION_FORMS``, or None."""
    for pattern in (COMPARE, TEMPORAL, QUESTION):
        match = pattern.search(text)
        if match is None:
            continue
        groups = match.groupdict()
        users = frozenset(int(u) for u in re.findall(r"\d+", groups.get("users") or ""))
        return Parsed(users, groups["category"], int(groups.get("year") or 0),
                      pattern is COMPARE)
    return None

ROOT_EXPLORE = """Let me look at the context first.
```repl
print(len(context))
print(context[:600])
```"""

ROOT_PROGRAM = '''The lines are records; ambiguous ones hedge. I will label them in chunks: plain records \
with a quick model, ambiguous ones with a careful one, then count in Python.
```repl
import re
users = {users}
target = {target!r}
since = {since}
records = [l for l in context.split("\\n") if l.startswith("Date:")]

def user_of(line):
    return int(re.search(r"User: (\\d+)", line).group(1))

mine = [l for l in records if (not users or user_of(l) in users) and int(l[6:10]) >= since]
hedged = re.compile(r"\\b(Reportedly|maybe|possibly|Some say)\\b")
plain = [l for l in mine if not hedged.search(l)]
unclear = [l for l in mine if hedged.search(l)]
labels = {categories!r}

def jobs_for(lines, careful):
    out = []
    for start in range(0, len(lines), {chunk}):
        chunk = lines[start:start + {chunk}]
        head = "These records are ambiguous: reason carefully about each one. " if careful else ""
        body = "\\n".join(f"{{i}}: {{line.split('Instance: ')[1].strip()}}" for i, line in enumerate(chunk))
        out.append((chunk, head + "Label each record with one of: " + ", ".join(labels)
                    + ". Answer one line per record as `<number>: <label>`, or "
                    + "`<number>: unsure` if you cannot tell.\\n" + body))
    return out

jobs = jobs_for(plain, False) + jobs_for(unclear, True)
# a chunk with an answer its model was unsure of goes again to a stronger pool (the cascade)
replies = llm_query_batched([prompt for _, prompt in jobs], escalate_if=r"^\\d+: unsure$")
per_user = {{}}
for (chunk, _), reply in zip(jobs, replies):
    for line in reply.splitlines():
        number, _, label = line.partition(":")
        if label.strip() == target and number.strip().isdigit() and int(number) < len(chunk):
            user = user_of(chunk[int(number)])
            per_user[user] = per_user.get(user, 0) + 1
answer_count = sum(per_user.values())
result = {result}
print(f"{{len(mine)}} records, {{len(jobs)}} sub-calls, {{answer_count}} about {{target}}")
{answer_now}```'''

# The `answer` dict is the finishing protocol both heterarch and the reference RLM accept.
# With ``finish="answer"`` the program itself answers once its count is computed (no turn
# spent reading the output back): the run ends with this cell.
ROOT_ANSWER_IN_PROGRAM = 'answer["content"] = str(result)\nanswer["ready"] = True\n'
PREVIEW = "The context begins:"  # what the RLM's first message shows (``actors.agents._rlm``)

ROOT_FINISH = """The count is computed.
```repl
answer["content"] = str(result)
answer["ready"] = True
```"""
ROOT_FINISH_VAR = "The count is computed.\nFINAL_VAR(result)"
ROOT_RETRY = "The program failed; running it again.\n"
SUMMARY = re.compile(r"(\d+) records, (\d+) sub-calls, (\d+) about ")
ERROR_MARKS = ("[error]", "Traceback", "Error:")


class RootResponder:
    """The root model of an RLM run on an OOLONG question (a rule-based stand-in).

    What it expects (the RLM agent's chat, see ``actors.agents._rlm``):

    1. a system message (ignored here: ``RoutingResponder`` sends chats *with* a system
       message to this responder, all others to the sub-model);
    2. a user message containing ``How many records [of users U1, U2, ...] are about a
       <category>?`` (e.g. ``Question: How many ...``); the first such message is the
       question (see ``QUESTION_FORMS``). Without one it says plainly that it cannot parse
       the question and answers ``FINAL(cannot answer: ...)``;
    3. after each assistant turn, a user message with the cells' (truncated) output.

    What it answers, keyed on the assistant turns so far and on that output:

    * no assistant turn yet: ``ROOT_EXPLORE`` (print ``len(context)`` and its head);
    * then ``ROOT_PROGRAM``: keep the ``Date: ... || User: N || Instance: ...`` lines of the
      asked users, split them into plain and hedged (ambiguous) records, and build one
      sub-prompt per ``chunk`` records: ``Label each record with one of: <categories>.
      Answer one line per record as `<number>: <label>`.`` followed by ``<i>: <instance>``
      lines; hedged chunks start with ``These records are ambiguous: reason carefully about
      each one.`` -- the signal the complexity router reads to send them to a strong pool.
      It calls ``llm_query_batched(prompts)``, counts the labels equal to the category into
      ``answer_count`` and prints ``<n> records, <k> sub-calls, <count> about <category>``;
    * once an output shows that summary line (or, after the program, an output without an
      error mark): the finish -- ``finish="answer"`` (default) sets ``answer["content"]`` and
      ``answer["ready"] = True`` in a ```repl block; ``finish="final_var"`` answers
      ``FINAL_VAR(answer_count)``;
    * an output with an error mark (``[error]``, ``Traceback``) re-sends the program, at most
      ``retries`` times, then answers ``FINAL(unknown)``.
    """

    def __init__(self, chunk: int = 25, *, finish: str = "answer", retries: int = 2) -> None:
        if finish not in ("answer", "final_var"):
            raise ValueError("finish must be 'answer' or 'final_var'")
        self.chunk = chunk
        self.finish = finish
        self.retries = retries

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        parsed = next((q for m in messages if m.get("role") == "user"
                       and (q := parse_question(m.get("content", ""))) is not None), None)
        if parsed is None:
            return CANNOT_PARSE
        turns = sum(1 for m in messages if m.get("role") == "assistant")
        # The head of the context in the question's message: no need to look first.
        if any(PREVIEW in m.get("content", "") for m in messages if m.get("role") == "user"):
            turns += 1
        if turns == 0:
            return ROOT_EXPLORE
        users = sorted(parsed.users)
        literal = "{" + ", ".join(map(str, users)) + "}" if users else "set()"
        result = (f"max({users}, key=lambda u: (per_user.get(u, 0), -u))" if parsed.compare
                  else "answer_count")
        program = ROOT_PROGRAM.format(users=literal, target=parsed.category,
                                      since=parsed.since_year, categories=list(CATEGORIES),
                                      chunk=self.chunk, result=result,
                                      answer_now=(ROOT_ANSWER_IN_PROGRAM
                                                  if self.finish == "answer" else ""))
        if turns == 1:
            return program
        last = messages[-1].get("content", "") if messages[-1].get("role") == "user" else ""
        done = any(SUMMARY.search(m.get("content", "")) for m in messages
                   if m.get("role") == "user")
        if done or not any(mark in last for mark in ERROR_MARKS):
            return ROOT_FINISH_VAR if self.finish == "final_var" else ROOT_FINISH
        if turns - 1 <= self.retries:
            return ROOT_RETRY + program
        return "The program keeps failing.\nFINAL(unknown)"


def label_prompts(lines: Sequence[str], *, chunk: int = 25) -> list[str]:
    """The sub-prompts ``ROOT_PROGRAM`` sends for these ``Date: ...`` lines (plain records in
    chunks, then hedged ones with the careful prefix): for evaluating routers offline."""
    plain = [line for line in lines if not HEDGES.search(line)]
    unclear = [line for line in lines if HEDGES.search(line)]
    out = []
    for group, careful in ((plain, False), (unclear, True)):
        for start in range(0, len(group), chunk):
            head = ("These records are ambiguous: reason carefully about each one. "
                    if careful else "")
            body = "\n".join(f"{i}: {line.split('Instance: ')[1].strip()}"
                             for i, line in enumerate(group[start:start + chunk]))
            out.append(head + "Label each record with one of: " + ", ".join(CATEGORIES)
                       + ". Answer one line per record as `<number>: <label>`, or "
                       + "`<number>: unsure` if you cannot tell.\n" + body)
    return out


def label_items(prompt: str, reply: str) -> list[bool]:
    """Which numbered records of a labelling ``prompt`` the ``reply`` got right (by the
    generator's truth); empty when the prompt has none this generator wrote."""
    answered = {}
    for line in reply.splitlines():
        number, sep, label = line.partition(":")
        if sep and number.strip().isdigit():
            answered[int(number)] = label.strip()
    right = []
    for line in prompt.splitlines():
        number, sep, text = line.partition(": ")
        truth = true_label(text.strip()) if sep and number.strip().isdigit() else None
        if truth is not None:
            right.append(answered.get(int(number)) == truth)
    return right


def _vocabulary() -> dict[str, str]:
    """Word of a template -> its category (what a model 'knows')."""
    table: dict[str, str] = {}
    for templates in (_EASY, _HARD):
        for label, items in templates.items():
            for template in items:
                key = template.split("{x}")[0].strip() + "|" + template.split("{x}")[1].strip()
                table[key] = label
    return table


_KNOWN = _vocabulary()


def true_label(text: str) -> str | None:
    for key, label in _KNOWN.items():
        before, after = key.split("|")
        if text.startswith(before) and text.endswith(after):
            return label
    return None


@dataclass(frozen=True)
class Accuracy:
    """Chance of a right label on an easy record and on a hard (hedged) one.

    A wrong label on a hard record is ``unsure`` (a model that cannot tell falls back on the
    most generic category), so a weak model's errors do not cancel out in a count: it
    under-counts every other category. A wrong label on an easy record is any other category.
    """

    easy: float
    hard: float
    unsure: str = "description"
    # Which records are hard for this model: by default the generator's hedged ones; with
    # ``hard_words``, those whose name has one of these words instead (a model whose hard
    # items differ from the generator's labels: see ``shifted_difficulty``).
    hard_words: tuple[str, ...] = ()

    def is_hard(self, text: str) -> bool:
        if self.hard_words:
            return any(w in self.hard_words for w in re.findall(r"[a-z]+", text))
        return bool(HEDGES.search(text))


def shifted_difficulty(seed: int, words: int = 4) -> tuple[str, ...]:
    """A seeded set of name words that make a record hard (about 28% of records with 4 of the
    26 words), independent of the generator's hedges: simulated models whose hard items
    the generator does not know."""
    return tuple(sorted(random.Random(f"difficulty-{seed}").sample(_WORDS, words)))


class LabelResponder:
    """A sub-model that labels numbered records, wrong sometimes (see the module docstring)."""

    def __init__(self, accuracy: Accuracy, seed: int = 0) -> None:
        self.accuracy = accuracy
        self.seed = seed

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        prompt = messages[-1].get("content", "") if messages else ""
        may_doubt = "`<number>: unsure`" in prompt  # the prompt lets it say so
        out = []
        for line in prompt.splitlines():
            number, sep, text = line.partition(": ")
            if not sep or not number.strip().isdigit():
                continue
            text = text.strip()
            label = true_label(text) or "description"
            hard = self.accuracy.is_hard(text)
            p = self.accuracy.hard if hard else self.accuracy.easy
            digest = hashlib.sha256(f"{self.seed}|{model}|{text}".encode()).digest()
            if digest[0] / 255 > p:
                others = [c for c in CATEGORIES if c != label]
                if hard and may_doubt and digest[2] < 128:  # half the time it knows it
                    label = "unsure"
                elif hard and self.accuracy.unsure in others:
                    label = self.accuracy.unsure
                else:
                    label = others[digest[1] % len(others)]
            out.append(f"{number.strip()}: {label}")
        return "\n".join(out) if out else (
            "cannot label: no lines of the form `<number>: <record>` in the prompt")
