"""Runs a compiled model library on one device: token ids in, logits out, KV cache kept inside.

This is the lowest layer of the Python engine and mirrors what web_runtime/pipeline.js does with tvmjs, so a
difference between the two is a bug in one of them, not a modelling difference. Not thread-safe: one thread
(the engine's scheduler) drives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.runtime import ShapeTuple

from webbuild.engine.kv_pages import PAGE_SIZE, PageTable


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
        self.pages = PageTable()  # who holds which page, and the token ids each sequence's KV holds

    # -- sequences ------------------------------------------------------------------------------------------
    def available_pages(self) -> int:
        """Free KV cache pages (``PAGE_SIZE`` tokens each): the scheduler admits and preempts by them."""
        return int(self._free_pages(self.kv_cache))

    def add_sequence(self, seq_id: int) -> None:
        self._kv["add_sequence"](self.kv_cache, seq_id)
        self.pages.add(seq_id)

    def fork_sequence(self, parent: int, child: int, position: int) -> None:
        """Adds ``child`` holding the first ``position`` tokens of ``parent``. Whole KV pages are shared, not
        copied (a partly filled last page is); both go on independently."""
        self._kv["fork_sequence"](self.kv_cache, parent, child, position)
        self.pages.fork(parent, child, position)

    def remove_sequence(self, seq_id: int) -> None:
        """Frees the sequence's KV pages (shared ones once no other sequence holds them)."""
        if seq_id not in self.pages.tokens:
            return
        self._kv["remove_sequence"](self.kv_cache, seq_id)
        self.pages.remove(seq_id)

    # -- forward passes -------------------------------------------------------------------------------------
    def _embed(self, token_ids: Sequence[int], shape: Sequence[int]) -> tvm.runtime.Tensor:
        ids = tvm.runtime.tensor(np.asarray(token_ids, dtype="int32"), self.device)
        embeds = self.vm["embed"](ids, self.params)
        return embeds._create_view(ShapeTuple([*shape, embeds.shape[-1]]))

    def _run(self, fn: str, steps: Sequence[tuple[int, Sequence[int]]], *args: object) -> np.ndarray:
        """``fn`` appending each step's tokens to its sequence."""
        for seq_id, ids in steps:
            if self.pages.length(seq_id) + len(ids) > self.context_window_size:
                raise ValueError(f"sequence {seq_id} would exceed the context window of {self.context_window_size}")
        seq_ids, lengths = ShapeTuple([s for s, _ in steps]), ShapeTuple([len(ids) for _, ids in steps])
        self._kv["begin_forward"](self.kv_cache, seq_ids, lengths)
        logits, self.kv_cache = self.vm[fn](*args, self.kv_cache, self.params)
        self._kv["end_forward"](self.kv_cache)
        for seq_id, ids in steps:
            self.pages.append(seq_id, ids)
        return logits.numpy()

    def prefill_batch(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        """New tokens for several sequences in one pass (at most ``prefill_chunk_size`` in all);
        returns [len(chunks), vocab]: the logits after each chunk's last token."""
        ids = [t for _, chunk in chunks for t in chunk]
        ends = np.cumsum([len(chunk) for _, chunk in chunks]) - 1
        positions = tvm.runtime.tensor(ends.astype("int32"), self.device)
        return self._run("batch_prefill", chunks, self._embed(ids, [1, len(ids)]), positions)[0]

    def decode_batch(self, steps: Sequence[tuple[int, int]]) -> np.ndarray:
        """One token for each of several sequences; returns [len(steps), vocab].

        A lone sequence goes through ``decode``, whose static shapes get the tuned GEMV schedules: on the CPU
        it is ~1.8x faster than ``batch_decode`` with a batch of one.
        """
        if len(steps) == 1:
            return self.decode(*steps[0])[None]
        ids = [t for _, t in steps]
        return self._run("batch_decode", [(s, [t]) for s, t in steps], self._embed(ids, [len(ids), 1]))[:, 0]

    def verify(self, seq_id: int, token_ids: Sequence[int]) -> np.ndarray:
        """Logits after every one of ``token_ids`` appended to ``seq_id``: [len(token_ids), vocab]."""
        return self._run("batch_verify", [(seq_id, token_ids)], self._embed(token_ids, [1, len(token_ids)]))[0]

    # -- one sequence through the single-sequence functions the browser uses ---------------------------------
    def prefill(self, seq_id: int, token_ids: Sequence[int]) -> np.ndarray:
        """Appends tokens to ``seq_id`` in chunks of ``prefill_chunk_size``; the last position's logits."""
        logits = np.empty(0, dtype="float32")
        for start in range(0, len(token_ids), self.prefill_chunk_size):
            chunk = token_ids[start : start + self.prefill_chunk_size]
            logits = self._run("prefill", [(seq_id, chunk)], self._embed(chunk, [1, len(chunk)]))
        return logits.reshape(-1)

    def decode(self, seq_id: int, token_id: int) -> np.ndarray:
        return self._run("decode", [(seq_id, [token_id])], self._embed([token_id], [1, 1])).reshape(-1)
