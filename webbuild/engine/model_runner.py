"""Runs a compiled model library on one device: token ids in, logits out, KV cache kept inside.

This is the lowest layer of the Python engine and mirrors what web_runtime/pipeline.js does with tvmjs, so a
difference between the two is a bug in one of them, not a modelling difference. Not thread-safe: one thread
(the engine's scheduler) drives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.runtime import ShapeTuple

PAGE_SIZE = 16


@dataclass
class _Prefix:
    """Tokens that forked sequences share."""

    tokens: int
    holders: int = 1


def _device(name: str) -> tvm.runtime.Device:
    return tvm.cuda(0) if name == "cuda" else tvm.cpu(0)


class ModelRunner:
    """Sequences (integer ids) through ``embed`` + ``prefill``/``decode``/``batch_*`` with TVM's paged KV cache."""

    def __init__(
        self,
        library: Path,
        params: Mapping[str, np.ndarray],
        param_names: Sequence[str],
        *,
        context_window_size: int,
        prefill_chunk_size: int,
        max_num_sequence: int = 1,
        max_total_sequence_length: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.device = _device(device)
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        self.params = [tvm.runtime.tensor(params[name], self.device) for name in param_names]
        self.context_window_size = context_window_size
        self.prefill_chunk_size = prefill_chunk_size
        self.max_num_sequence = max_num_sequence
        self.max_total_sequence_length = max_total_sequence_length or context_window_size
        self._kv = {
            name: tvm.get_global_func(f"vm.builtin.kv_state_{name}")
            for name in ("add_sequence", "remove_sequence", "fork_sequence", "begin_forward", "end_forward")
        }
        self._free_pages = tvm.get_global_func("vm.builtin.attention_kv_cache_get_num_available_pages")
        self.kv_cache = self.vm["create_tir_paged_kv_cache"](
            ShapeTuple([max_num_sequence]),
            ShapeTuple([self.max_total_sequence_length]),
            ShapeTuple([prefill_chunk_size]),
            ShapeTuple([PAGE_SIZE]),
            ShapeTuple([0]),
        )
        self.lengths: dict[int, int] = {}  # tokens each live sequence attends to (its prefix included)
        # Token accounting for used_tokens, which other threads read: tokens only a sequence holds, and the
        # prefixes that forks share (each counted once, while any sequence holds it).
        self._own: dict[int, int] = {}
        self._prefix: dict[int, _Prefix] = {}
        self.used_tokens = 0

    # -- sequences ------------------------------------------------------------------------------------------
    def available_pages(self) -> int:
        """Free KV cache pages (``PAGE_SIZE`` tokens each): the scheduler admits and preempts by them."""
        return int(self._free_pages(self.kv_cache))

    def add_sequence(self, seq_id: int) -> None:
        self._kv["add_sequence"](self.kv_cache, seq_id)
        self.lengths[seq_id] = self._own[seq_id] = 0

    def fork_sequence(self, parent: int, child: int, position: int) -> None:
        """Adds ``child`` holding the first ``position`` tokens of ``parent``. Whole KV pages are shared, not
        copied (a partly filled last page is); both go on independently."""
        self._kv["fork_sequence"](self.kv_cache, parent, child, position)
        self.lengths[child], self._own[child] = position, 0
        shared = self._prefix.get(parent)
        if shared is None:  # the parent's first tokens become a prefix both hold
            shared = self._prefix[parent] = _Prefix(position)
            self._own[parent] -= position
        if shared.tokens == position:
            shared.holders += 1
            self._prefix[child] = shared
        else:  # another fork point: counted as the child's own tokens (over-counts what is shared)
            self._own[child] = position
            self.used_tokens += position

    def remove_sequence(self, seq_id: int) -> None:
        """Frees the sequence's KV pages (shared ones once no other sequence holds them)."""
        if self.lengths.pop(seq_id, None) is None:
            return
        self._kv["remove_sequence"](self.kv_cache, seq_id)
        self.used_tokens -= self._own.pop(seq_id)
        shared = self._prefix.pop(seq_id, None)
        if shared is not None:
            shared.holders -= 1
            if not shared.holders:
                self.used_tokens -= shared.tokens

    # -- forward passes -------------------------------------------------------------------------------------
    def _embed(self, token_ids: Sequence[int], shape: Sequence[int]) -> tvm.runtime.Tensor:
        ids = tvm.runtime.tensor(np.asarray(token_ids, dtype="int32"), self.device)
        embeds = self.vm["embed"](ids, self.params)
        return embeds._create_view(ShapeTuple([*shape, embeds.shape[-1]]))

    def _run(self, fn: str, seq_ids: Sequence[int], lengths: Sequence[int], *args: object) -> np.ndarray:
        for seq_id, n in zip(seq_ids, lengths, strict=True):
            if self.lengths[seq_id] + n > self.context_window_size:
                raise ValueError(f"sequence {seq_id} would exceed the context window of {self.context_window_size}")
        self._kv["begin_forward"](self.kv_cache, ShapeTuple(list(seq_ids)), ShapeTuple(list(lengths)))
        logits, self.kv_cache = self.vm[fn](*args, self.kv_cache, self.params)
        self._kv["end_forward"](self.kv_cache)
        for seq_id, n in zip(seq_ids, lengths, strict=True):
            self.lengths[seq_id] += n
            self._own[seq_id] += n
        self.used_tokens += sum(lengths)
        return logits.numpy()

    def prefill_batch(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        """New tokens for several sequences in one pass (at most ``prefill_chunk_size`` in all);
        returns [len(chunks), vocab]: the logits after each chunk's last token."""
        ids = [t for _, chunk in chunks for t in chunk]
        ends = np.cumsum([len(chunk) for _, chunk in chunks]) - 1
        positions = tvm.runtime.tensor(ends.astype("int32"), self.device)
        seq_ids, lengths = [s for s, _ in chunks], [len(c) for _, c in chunks]
        return self._run("batch_prefill", seq_ids, lengths, self._embed(ids, [1, len(ids)]), positions)[0]

    def decode_batch(self, steps: Sequence[tuple[int, int]]) -> np.ndarray:
        """One token for each of several sequences; returns [len(steps), vocab].

        A lone sequence goes through ``decode``, whose static shapes get the tuned GEMV schedules: on the CPU
        it is ~1.8x faster than ``batch_decode`` with a batch of one.
        """
        if len(steps) == 1:
            return self.decode(*steps[0])[None]
        seq_ids, ids = [s for s, _ in steps], [t for _, t in steps]
        return self._run("batch_decode", seq_ids, [1] * len(ids), self._embed(ids, [len(ids), 1]))[:, 0]

    def verify(self, seq_id: int, token_ids: Sequence[int]) -> np.ndarray:
        """Logits after every one of ``token_ids`` appended to ``seq_id``: [len(token_ids), vocab]."""
        return self._run("batch_verify", [seq_id], [len(token_ids)], self._embed(token_ids, [1, len(token_ids)]))[0]

    # -- one sequence through the single-sequence functions the browser uses ---------------------------------
    def prefill(self, seq_id: int, token_ids: Sequence[int]) -> np.ndarray:
        """Appends tokens to ``seq_id`` in chunks of ``prefill_chunk_size``; the last position's logits."""
        logits = np.empty(0, dtype="float32")
        for start in range(0, len(token_ids), self.prefill_chunk_size):
            chunk = token_ids[start : start + self.prefill_chunk_size]
            logits = self._run("prefill", [seq_id], [len(chunk)], self._embed(chunk, [1, len(chunk)]))
        return logits.reshape(-1)

    def decode(self, seq_id: int, token_id: int) -> np.ndarray:
        return self._run("decode", [seq_id], [1], self._embed([token_id], [1, 1])).reshape(-1)
