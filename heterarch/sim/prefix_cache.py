"""A prefix cache per simulated replica, as OpenAI-compatible providers and vLLM keep one.

The prompt (its messages, role and text, in order) is cut into blocks of 128 tokens (512
characters at the simulator's four characters a token); a replica remembers the blocks of the
prompts it prefilled (least recently used forgotten first). A later prompt of at least 1,024
tokens whose first blocks the replica remembers is a hit on those blocks (OpenAI: caching
from 1,024 tokens, hits in increments of 128; vLLM's automatic prefix caching works on blocks
the same way).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ("BLOCK_CHARS", "MIN_CACHED_CHARS", "Replicas")

BLOCK_CHARS = 128 * 4
MIN_CACHED_CHARS = 1024 * 4


def _prompt_text(messages: Sequence[dict[str, str]]) -> str:
    return "".join(f"\x1e{m.get('role', '')}\x1f{m.get('content', '')}" for m in messages)


def _block_hashes(text: str) -> list[bytes]:
    """The hash of each whole-block prefix of ``text`` (chained: block i covers 0..i)."""
    hashes = []
    h = hashlib.blake2b(digest_size=16)
    for start in range(0, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):
        h.update(text[start:start + BLOCK_CHARS].encode("utf-8", "surrogatepass"))
        hashes.append(h.copy().digest())
    return hashes


class _Replica:
    def __init__(self, capacity_blocks: int) -> None:
        self.blocks: OrderedDict[bytes, None] = OrderedDict()
        self.capacity = capacity_blocks
        self.in_flight = 0

    def lookup(self, hashes: list[bytes]) -> int:
        """Blocks of the prompt's prefix this replica has (touched: recently used)."""
        hit = 0
        for h in hashes:
            if h not in self.blocks:
                break
            self.blocks.move_to_end(h)
            hit += 1
        return hit

    def remember(self, hashes: list[bytes]) -> None:
        """The prompt's blocks, once its prefill is done."""
        for h in hashes:
            self.blocks[h] = None
            self.blocks.move_to_end(h)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)


class Replicas:
    """The replicas of one simulated model: which one serves a request, and its cache hit.

    Without a ``prompt_cache_key`` requests go round-robin (a plain load balancer in front of
    the replicas); with one, to the replica the key hashes to, unless that replica already
    runs its share of the model's concurrency and another has room (stickiness never makes a
    request wait where it would not have waited)."""

    def __init__(self, count: int, concurrency: int, capacity_blocks: int = 200_000) -> None:
        self.replicas = [_Replica(capacity_blocks) for _ in range(max(1, count))]
        self.share = max(1, -(-concurrency // len(self.replicas)))
        self._next = itertools.cycle(range(len(self.replicas)))

    def choose(self, key: str | None) -> int:
        if key is None or len(self.replicas) == 1:
            return next(self._next)
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        home = int.from_bytes(digest, "big") % len(self.replicas)
        if self.replicas[home].in_flight < self.share:
            return home
        return min(range(len(self.replicas)), key=lambda i: self.replicas[i].in_flight)

    def serve(self, index: int, messages: Sequence[dict[str, str]]) -> tuple[int, list[bytes]]:
        """Characters of the prompt that replica ``index`` had cached (0: a miss, or a prompt
        under 1,024 tokens), and the prompt's blocks for ``prefilled`` once its prefill is
        done (a prompt that arrives meanwhile misses them: nothing is cached before it is
        computed); marks the request in flight there until ``done(index)``."""
        replica = self.replicas[index]
        replica.in_flight += 1
        text = _prompt_text(messages)
        hashes = _block_hashes(text)
        cached = replica.lookup(hashes) * BLOCK_CHARS
        if len(text) < MIN_CACHED_CHARS or cached < MIN_CACHED_CHARS:
            cached = 0
        return cached, hashes

    def prefilled(self, index: int, hashes: list[bytes]) -> None:
        self.replicas[index].remember(hashes)

    def done(self, index: int) -> None:
        self.replicas[index].in_flight -= 1
