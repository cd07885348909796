"""The prefix cache: finished sequences keep their KV, and a new prompt starts from the longest prefix the KV
cache already holds, so the next turn of a chat prefills only what is new.

It works with what TVM's paged KV cache offers (after MLC LLM's engine, which does the same with a radix tree):

- A finished (or preempted) sequence is not removed: it stays in the KV cache as a cached prefix.
- A new sequence is compared, by token ids, with every sequence in the KV cache, cached or running, and starts
  from the longest common prefix, if it is at least a page long. A fresh prompt leaves its last token to
  prefill (its logits give the first generated token); a preempted sequence may match all it had.
  - When the prompt extends a cached prefix whole, the new sequence takes that KV sequence over: nothing is
    copied and the cached prefix's pages become the running sequence's.
  - Otherwise it forks the holder at the match (``kv_state_fork_sequence`` with a position): the whole pages
    before it are shared, TVM counting references per block, and the partly filled page is copied.
- Cached prefixes are evicted least recently used first whenever pages are needed (admission, a step's growth,
  a direct runner call). Only pages no running sequence holds come back, which the page table
  (``kv_pages.PageTable``) counts, so admission counts those pages as free.
- A finished sequence that a cached prefix already covers is removed; a cached prefix that it extends is
  removed in its favour, so the cache holds no prefix twice.

A linear scan finds the match: the KV cache holds at most a few hundred sequences, and comparing their token
ids with numpy takes well under a millisecond per admission.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from webbuild.engine.kv_pages import PAGE_SIZE


@dataclass(frozen=True)
class Reuse:
    """Where a new sequence's first ``length`` tokens are held: the KV sequence ``source``; ``cached`` when it
    is a cached prefix, ``adopt`` when the new sequence takes it over whole."""

    source: int | None = None
    length: int = 0
    cached: bool = False
    adopt: bool = False


def _common_prefix(want: np.ndarray, held: Sequence[int]) -> int:
    n = min(len(want), len(held))
    differ = np.flatnonzero(want[:n] != np.asarray(held[:n], dtype=want.dtype))
    return int(differ[0]) if differ.size else n


class PrefixCache:
    """Cached prefixes in one model runner's KV cache, least recently used first; ``enabled=False`` keeps
    nothing and reuses nothing. Used from the scheduler thread only (``reused_tokens`` may be read anywhere)."""

    def __init__(self, runner: Any, enabled: bool = True) -> None:
        self.runner = runner  # ModelRunner, or a stand-in with the same methods and ``pages`` table
        self.enabled = enabled
        self._lru: OrderedDict[int, None] = OrderedDict()
        self.reused_tokens = 0  # tokens taken from the KV cache instead of prefilled, since start

    @property
    def evictable_pages(self) -> int:
        """Pages that evicting every cached prefix would free."""
        return int(self.runner.pages.cached_pages)

    def __len__(self) -> int:
        return len(self._lru)

    def match(self, tokens: Sequence[int], limit: int) -> Reuse:
        """The longest prefix of ``tokens[:limit]`` some sequence's KV holds (a cached prefix the tokens extend
        whole wins a tie), or ``Reuse()`` when that is shorter than a page."""
        if not self.enabled or limit < PAGE_SIZE:
            return Reuse()
        table = self.runner.pages
        want = np.asarray(tokens[:limit], dtype=np.int64)
        running = [s for s in table.tokens if s >= 0 and s not in self._lru]  # negative ids: the engine's own
        best = Reuse()
        for seq in [*reversed(self._lru), *running]:
            held = table.tokens[seq]
            n = _common_prefix(want, held)
            cached = seq in self._lru
            adopt = cached and n == len(held)
            if (n, adopt) > (best.length, best.adopt):
                best = Reuse(seq, n, cached, adopt)
        return best if best.length >= PAGE_SIZE else Reuse()

    def start(self, seq: int, reuse: Reuse) -> tuple[int, int]:
        """Puts a new sequence into the KV cache as ``reuse`` says; returns the KV sequence id it runs as (the
        cached prefix's when it takes one over, else ``seq``) and how many of its tokens the KV holds already."""
        if reuse.length % PAGE_SIZE and not reuse.adopt:  # the fork copies the partly filled page
            self.reserve(1, keep=reuse.source)
            if not self.runner.available_pages():  # no page to copy into: share the whole pages only
                aligned = reuse.length - reuse.length % PAGE_SIZE
                reuse = Reuse(reuse.source, aligned, reuse.cached) if aligned else Reuse()
        if reuse.source is None:
            self.runner.add_sequence(seq)
            return seq, 0
        if reuse.adopt:
            del self._lru[reuse.source]
            self.runner.pages.set_cached(reuse.source, False)
            seq = reuse.source
        else:
            self.runner.fork_sequence(reuse.source, seq, reuse.length)
            if reuse.cached:
                self._lru.move_to_end(reuse.source)
        self.reused_tokens += reuse.length
        return seq, reuse.length

    def keep(self, seq: int) -> None:
        """A sequence that finished or was preempted: its KV stays as a cached prefix, unless the cache is off,
        it is shorter than a page or a cached prefix already covers it (then it is removed)."""
        table = self.runner.pages
        if seq not in table.tokens:
            return
        held = table.tokens[seq]
        if not self.enabled or len(held) < PAGE_SIZE:
            self.runner.remove_sequence(seq)
            return
        for other in list(self._lru):
            theirs = table.tokens[other]
            if len(theirs) >= len(held) and theirs[: len(held)] == held:
                self._lru.move_to_end(other)
                self.runner.remove_sequence(seq)
                return
            if held[: len(theirs)] == theirs:  # the new one holds all of it and more
                self._drop(other)
        table.set_cached(seq, True)
        self._lru[seq] = None

    def evict(self, keep: int | None = None) -> bool:
        """Removes the least recently used cached prefix other than ``keep``; False when there is none."""
        victim = next((s for s in self._lru if s != keep), None)
        if victim is None:
            return False
        self._drop(victim)
        return True

    def reserve(self, pages: int, keep: int | None = None) -> None:
        """Evicts cached prefixes until ``pages`` pages are free or none is left to evict."""
        while self.runner.available_pages() < pages and self.evict(keep):
            pass

    def _drop(self, seq: int) -> None:
        del self._lru[seq]
        self.runner.remove_sequence(seq)
