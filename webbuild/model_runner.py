"""Runs a compiled model library on one device: token ids in, next-token logits out, KV cache kept inside.

This is the lowest layer of the Python engine and mirrors what web_runtime/engine.js does with tvmjs, so a
difference between the two is a bug in one of them, not a modelling difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.runtime import ShapeTuple

PAGE_SIZE = 16


def _device(name: str) -> tvm.runtime.Device:
    return tvm.cuda(0) if name == "cuda" else tvm.cpu(0)


class ModelRunner:
    """One sequence (id 0) through ``embed``/``prefill``/``decode`` with TVM's paged KV cache."""

    def __init__(
        self,
        library: Path,
        params: Mapping[str, np.ndarray],
        param_names: Sequence[str],
        *,
        context_window_size: int,
        prefill_chunk_size: int,
        device: str = "cpu",
    ) -> None:
        self.device = _device(device)
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        self.params = [tvm.runtime.tensor(params[name], self.device) for name in param_names]
        self.context_window_size = context_window_size
        self.prefill_chunk_size = prefill_chunk_size
        self._builtin = {
            name: tvm.get_global_func(f"vm.builtin.kv_state_{name}")
            for name in ("add_sequence", "begin_forward", "end_forward", "clear")
        }
        self.kv_cache = self.vm["create_tir_paged_kv_cache"](
            ShapeTuple([1]),
            ShapeTuple([context_window_size]),
            ShapeTuple([prefill_chunk_size]),
            ShapeTuple([PAGE_SIZE]),
            ShapeTuple([0]),
        )
        self.length = 0
        self.reset()

    def reset(self) -> None:
        """Forget the sequence so the next call starts a new one at position 0."""
        self._builtin["clear"](self.kv_cache)
        self._builtin["add_sequence"](self.kv_cache, 0)
        self.length = 0

    def _forward(self, fn: str, token_ids: Sequence[int]) -> np.ndarray:
        ids = tvm.runtime.tensor(np.asarray(token_ids, dtype="int32"), self.device)
        embeds = self.vm["embed"](ids, self.params)
        embeds = embeds._create_view(ShapeTuple([1, len(token_ids), embeds.shape[-1]]))
        self._builtin["begin_forward"](self.kv_cache, ShapeTuple([0]), ShapeTuple([len(token_ids)]))
        logits, self.kv_cache = self.vm[fn](embeds, self.kv_cache, self.params)
        self._builtin["end_forward"](self.kv_cache)
        self.length += len(token_ids)
        return logits.numpy().reshape(-1)

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        """Appends tokens (in chunks of ``prefill_chunk_size``) and returns the last position's logits."""
        if self.length + len(token_ids) > self.context_window_size:
            raise ValueError("sequence longer than the context window")
        logits = np.empty(0, dtype="float32")
        for start in range(0, len(token_ids), self.prefill_chunk_size):
            logits = self._forward("prefill", token_ids[start : start + self.prefill_chunk_size])
        return logits

    def decode(self, token_id: int) -> np.ndarray:
        if self.length + 1 > self.context_window_size:
            raise ValueError("sequence longer than the context window")
        return self._forward("decode", [token_id])
