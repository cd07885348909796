"""Changes to TVM 0.27's KV cache source, applied to the staged copy the wasm runtime is compiled from: a repair
(``PLAIN_AUX_SLOTS``, below) and one launch a layer fewer per decode step (``SPLIT_APPENDS``).

With per-layer sliding windows (Gemma 3's local layers, Phi-3, Qwen2 ``use_sliding_window``),
``PagedAttentionKVCacheObj::SyncAuxArrayToDevice`` (``paged_kv_cache.cc``) copies the page indptr, page indices and
K RoPE offsets of each depth twice per forward: the full table the global layers read, then the sliding layers'
table of the pages within the window. On CUDA and CPU each copy gets its own region of one buffer
(``CachedPagedKVCacheAuxDataManager``); on every other device, WebGPU among them,
``PlainPagedKVCacheAuxDataManager`` (``attn_utils.h``) writes both into the same per-depth tensor, so the global
layers' view shows the window's pages and they lose everything before the window. Here the plain manager keeps a
second tensor per depth for those three tables and hands the second call of a copy round the second one; the
round starts at ``ResetAttnAuxDataCopy``, which ``SyncAuxArrayToDevice`` calls first and which is the only place
the three copies are made. (The length info is copied twice too, with the same data, so it needs no slot.)

Each edit replaces an anchor that must occur exactly once in its scope, so another TVM version fails here with a
ToolchainError rather than compiling a runtime patched in the wrong place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from webbuild.errors import ToolchainError

TVM_TIP = "webbuild's runtime patch is written for apache-tvm==0.27.0.post1: pip install apache-tvm==0.27.0.post1"


@dataclass(frozen=True)
class SourcePatch:
    """Text edits to one file of the staged TVM tree, made between ``scope_start`` and ``scope_end``."""

    path: str  # relative to the staged tree's root
    scope_start: str
    scope_end: str
    edits: tuple[tuple[str, str], ...]  # (anchor, replacement)

    def apply(self, root: Path) -> None:
        file = root / self.path
        text = file.read_text()
        start, end = text.find(self.scope_start), text.find(self.scope_end)
        if start < 0 or end < start:
            raise ToolchainError(
                f"TVM's {self.path} has no {self.scope_start!r} before {self.scope_end!r} to patch", tip=TVM_TIP
            )
        scope = text[start:end]
        for anchor, replacement in self.edits:
            if scope.count(anchor) != 1:
                raise ToolchainError(
                    f"TVM's {self.path} has {scope.count(anchor)} copies of {anchor!r} in {self.scope_start!r}, "
                    "where webbuild's patch expects one",
                    tip=TVM_TIP,
                )
            scope = scope.replace(anchor, replacement)
        file.write_text(text[:start] + scope + text[end:])


_SLIDING_TABLES = (
    "page_indptr_on_depths_device_",
    "page_indices_on_depths_device_",
    "k_rope_pos_offset_on_depths_device_",
)

PLAIN_AUX_SLOTS = SourcePatch(
    path="src/runtime/vm/attn_utils.h",
    scope_start="class PlainPagedKVCacheAuxDataManager",
    scope_end="class CachedPagedKVCacheAuxDataManager",
    edits=(
        (
            "    cur_append_length_indptr_device_ = Tensor::Empty(",
            "    // webbuild: a second tensor per depth (index kPagedKVCacheMaxBlockDepth + d) for the sliding-window\n"
            "    // layers' copy of these three tables, so it does not overwrite the global layers' copy.\n"
            "    for (int d = 0; d < kPagedKVCacheMaxBlockDepth; ++d) {\n"
            "      page_indptr_on_depths_device_.push_back(\n"
            "          Tensor::Empty({reserved_num_seqs + 1}, dtype_aux_, device));\n"
            "      page_indices_on_depths_device_.push_back(Tensor::Empty({num_total_pages}, dtype_aux_, device));\n"
            "      k_rope_pos_offset_on_depths_device_.push_back(\n"
            "          Tensor::Empty({reserved_num_seqs}, dtype_aux_, device));\n"
            "    }\n"
            "    cur_append_length_indptr_device_ = Tensor::Empty(",
        ),
        (
            "  // The reset of the plain auxiliary data manager is no-op.\n  void ResetAttnAuxDataCopy() final {}",
            "  // webbuild: a copy round starts; each table's next copy on a depth goes to its first tensor.\n"
            "  void ResetAttnAuxDataCopy() final { std::fill(slot_calls_.begin(), slot_calls_.end(), 0); }",
        ),
        *(
            (f"{table}[depth].CreateView(", f"NextSlot(&{table}, {i}, depth).CreateView(")
            for i, table in enumerate(_SLIDING_TABLES)
        ),
        (
            "  Tensor commit_copy_src_dst_pos_in_page_table_device_;\n",
            "  Tensor commit_copy_src_dst_pos_in_page_table_device_;\n"
            "  // webbuild: the tensor of `tensors` (table `table`) for this round's next copy on `depth`.\n"
            "  Tensor& NextSlot(std::vector<Tensor>* tensors, int table, int depth) {\n"
            "    int& calls = slot_calls_[table * kPagedKVCacheMaxBlockDepth + depth];\n"
            '    TVM_FFI_ICHECK_LT(calls, 2) << "a per-depth table was copied more than twice in one round";\n'
            "    return (*tensors)[(calls++) * kPagedKVCacheMaxBlockDepth + depth];\n"
            "  }\n"
            "  std::vector<int> slot_calls_ =\n"
            f"      std::vector<int>({len(_SLIDING_TABLES)} * kPagedKVCacheMaxBlockDepth, 0);\n",
        ),
    ),
)

# The decode step's K/V append inside the split kernel (arch/split_rope.py): one launch a layer fewer. Every
# WebGPU library's split takes the layer's pages, the append position map and whether this step appends before
# attending (decode steps do; prefill chunks append after attending, with the cache's own kernel), and when it
# appended, ``f_transpose_append`` is not called. Only the unscaled call is changed: our libraries create the
# cache without RoPE extension factors, so the call with them (and its append) stays TVM's.
SPLIT_APPENDS = SourcePatch(
    path="src/runtime/vm/paged_kv_cache.cc",
    scope_start="  void AttentionWithFusedQKV(",
    scope_end="  void SelfAttention(",
    edits=(
        (
            "static_cast<int64_t>(rope_mode_ == RoPEMode::kNormal));",
            "static_cast<int64_t>(rope_mode_ == RoPEMode::kNormal),\n"
            "                      // webbuild: the split appends K and V to the pages before attending\n"
            "                      pages_[local_layer_id], append_position_map_view_,\n"
            "                      static_cast<int64_t>(append_before_attn_));",
        ),
        (
            "    if (append_before_attn_) {\n      f_transpose_append_mha_",
            "    if (append_before_attn_ && rope_ext_factors_.has_value()) {  // webbuild: else the split appended\n"
            "      f_transpose_append_mha_",
        ),
    ),
)

PATCHES = (PLAIN_AUX_SLOTS, SPLIT_APPENDS)


def apply_patches(root: Path) -> None:
    """Patches the TVM source tree staged at ``root`` (never the installed wheel)."""
    for patch in PATCHES:
        patch.apply(root)


def patches_key() -> str:
    """The patches' full text, for the runtime objects' cache key."""
    return json.dumps([asdict(p) for p in PATCHES])
