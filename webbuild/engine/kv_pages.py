"""Who holds which KV cache page: a Python mirror of TVM's paged KV cache bookkeeping.

TVM frees a page once no sequence references it but tells only how many pages are free. The prefix cache needs
more: how many pages evicting a cached prefix would give back, and how many tokens running requests hold
beside cached ones. This table follows the cache's rules (pages of ``PAGE_SIZE`` tokens; a fork shares the
parent's whole pages before the fork position and copies the partly filled one; removing a sequence drops its
references) and the token ids each sequence's KV holds, which prefix matching compares prompts against.
Its counters are plain ints, so other threads may read them while the scheduler thread changes the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PAGE_SIZE = 16


@dataclass(eq=False)
class _Page:
    fill: int = 0  # tokens written
    live: int = 0  # running sequences holding it
    cached: int = 0  # cached prefixes holding it


class PageTable:
    """Pages and token ids of every sequence in one KV cache; a sequence is live or cached (``set_cached``)."""

    def __init__(self) -> None:
        self.tokens: dict[int, list[int]] = {}  # sequence -> the token ids its KV holds, in order
        self._pages: dict[int, list[_Page]] = {}
        self._cached: set[int] = set()
        self.pages_in_use = 0
        self.live_tokens = 0  # token slots in pages some live sequence holds (a shared page counts once)
        self.cached_tokens = 0  # token slots in pages only cached prefixes hold: evicting them all frees these
        self.cached_pages = 0  # pages only cached prefixes hold

    def length(self, seq: int) -> int:
        return len(self.tokens.get(seq, ()))

    # -- counters: a page's contribution is taken out before it changes and put back after ---------------------
    def _count(self, page: _Page, sign: int) -> None:
        if page.live:
            self.live_tokens += sign * page.fill
        elif page.cached:
            self.cached_tokens += sign * page.fill
            self.cached_pages += sign

    def _hold(self, seq: int, page: _Page, n: int) -> None:
        self._count(page, -1)
        if seq in self._cached:
            page.cached += n
        else:
            page.live += n
        self._count(page, 1)
        if n > 0 and page.live + page.cached == 1:
            self.pages_in_use += 1
        elif n < 0 and not page.live + page.cached:
            self.pages_in_use -= 1

    # -- the KV cache's operations ------------------------------------------------------------------------------
    def add(self, seq: int) -> None:
        self.tokens[seq], self._pages[seq] = [], []

    def fork(self, parent: int, child: int, position: int) -> None:
        self.add(child)
        self.tokens[child] = self.tokens[parent][:position]
        for page in self._pages[parent][: position // PAGE_SIZE]:
            self._pages[child].append(page)
            self._hold(child, page, 1)
        if position % PAGE_SIZE:  # the partly filled page is copied
            self._new_page(child, position % PAGE_SIZE)

    def append(self, seq: int, token_ids: Sequence[int]) -> None:
        tokens, pages = self.tokens[seq], self._pages[seq]
        for token in token_ids:
            if len(tokens) % PAGE_SIZE == 0:
                self._new_page(seq, 0)
            page = pages[-1]  # a sequence's last page is its own: only whole pages are shared
            self._count(page, -1)
            page.fill += 1
            self._count(page, 1)
            tokens.append(int(token))

    def remove(self, seq: int) -> None:
        for page in self._pages.pop(seq):
            self._hold(seq, page, -1)
        del self.tokens[seq]
        self._cached.discard(seq)

    def _new_page(self, seq: int, fill: int) -> None:
        page = _Page(fill=fill)
        self._pages[seq].append(page)
        self._hold(seq, page, 1)

    # -- ownership ----------------------------------------------------------------------------------------------
    def set_cached(self, seq: int, cached: bool) -> None:
        """Moves ``seq`` between the running sequences and the cached prefixes (whose pages may be evicted)."""
        if (seq in self._cached) == cached:
            return
        for page in self._pages[seq]:
            self._hold(seq, page, -1)
        if cached:
            self._cached.add(seq)
        else:
            self._cached.discard(seq)
        for page in self._pages[seq]:
            self._hold(seq, page, 1)
