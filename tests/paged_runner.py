"""A stand-in for ModelRunner that needs no compiled model: TVM's paged KV cache kept as the engine's page table
keeps it, and a model whose next token depends on every token before it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from webbuild.engine.kv_pages import PAGE_SIZE, PageTable

VOCAB = 40


def pages(tokens: int) -> int:
    return -(-tokens // PAGE_SIZE)


class PagedRunner:
    """ModelRunner's interface on the page table it keeps of TVM's paged KV cache (pages of PAGE_SIZE tokens,
    whole pages shared by forks, the partly filled one copied, "full" raising) and a model whose next token
    depends on every token before it, so a sequence resumed from the wrong state gives different text."""

    def __init__(self, pages: int = 9, max_num_sequence: int = 4, window: int = 128, chunk: int = 16) -> None:
        self.total_pages, self.max_num_sequence = pages, max_num_sequence
        self.context_window_size, self.prefill_chunk_size = window, chunk
        self.max_total_sequence_length = pages * PAGE_SIZE
        self.pages = PageTable()
        self.batches: list[tuple[str, int]] = []  # (kind, sequences) per call
        self.prefilled = 0  # tokens prefilled in all
        self.fail_decode = 0  # decode calls that raise next

    def available_pages(self) -> int:
        return self.total_pages - self.pages.pages_in_use

    def _take(self, pages: int) -> None:
        if pages > self.available_pages():
            raise RuntimeError("The KV cache is full. No page can be allocated.")

    # -- sequences
    def add_sequence(self, seq: int) -> None:
        assert seq not in self.pages.tokens
        self.pages.add(seq)

    def fork_sequence(self, parent: int, child: int, position: int) -> None:
        assert child not in self.pages.tokens and position <= self.pages.length(parent)
        self._take(1 if position % PAGE_SIZE else 0)
        self.pages.fork(parent, child, position)

    def remove_sequence(self, seq: int) -> None:
        if seq in self.pages.tokens:
            self.pages.remove(seq)

    # -- forward passes
    def _append(self, seq: int, ids: Sequence[int]) -> np.ndarray:
        now = self.pages.length(seq)
        self._take(pages(now + len(ids)) - pages(now))
        self.pages.append(seq, ids)
        history = self.pages.tokens[seq]
        assert len(history) <= self.context_window_size
        logits = np.zeros(VOCAB, dtype=np.float32)
        logits[(sum((i + 1) * t for i, t in enumerate(history)) * 7 + len(history)) % (VOCAB - 1)] = 8.0
        return logits

    def prefill_batch(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        self.batches.append(("prefill", len(chunks)))
        assert sum(len(c) for _, c in chunks) <= self.prefill_chunk_size
        self.prefilled += sum(len(c) for _, c in chunks)
        return np.stack([self._append(seq, chunk) for seq, chunk in chunks])

    def decode_batch(self, steps: Sequence[tuple[int, int]]) -> np.ndarray:
        self.batches.append(("decode", len(steps)))
        if self.fail_decode:
            self.fail_decode -= 1
            raise RuntimeError("kernel exploded")
        return np.stack([self._append(seq, [token]) for seq, token in steps])
