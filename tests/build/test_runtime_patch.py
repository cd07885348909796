"""webbuild.build.runtime_patch: the KV cache patches apply to the installed TVM's source, only where they are
meant to (the plain aux-data manager; the fused-QKV attention's split and append), and refuse a source they were
not written for (what they do in the browser: tests/build/arch/test_families.py, the sliding-window and family
browser tests against the CPU engine)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tvm

from webbuild.build import link
from webbuild.build.runtime_patch import PATCHES, PLAIN_AUX_SLOTS, SPLIT_APPENDS, apply_patches
from webbuild.errors import ToolchainError

INSTALLED = Path(tvm.__file__).parent


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A staged tree holding copies of the installed files the patches change."""
    for patch in PATCHES:
        dest = tmp_path / patch.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(INSTALLED / patch.path, dest)
    return tmp_path


@pytest.fixture
def staged(root: Path) -> Path:
    return root / PLAIN_AUX_SLOTS.path


def test_the_plain_manager_gets_a_slot_per_copy_and_the_rest_is_unchanged(staged: Path) -> None:
    original = (INSTALLED / PLAIN_AUX_SLOTS.path).read_text()
    apply_patches(staged.parents[3])
    patched = staged.read_text()
    for table in ("page_indptr_on_depths_device_", "page_indices_on_depths_device_", "k_rope_pos_offset_"):
        assert f"NextSlot(&{table}" in patched
    assert "std::fill(slot_calls_.begin(), slot_calls_.end(), 0)" in patched  # ResetAttnAuxDataCopy
    start = original.index(PLAIN_AUX_SLOTS.scope_start)
    end = original.index(PLAIN_AUX_SLOTS.scope_end)
    assert patched[:start] == original[:start]
    assert patched.endswith(original[end:])  # the cached (CUDA/CPU) manager and what follows


def test_the_fused_qkv_attention_appends_in_the_split_before_attending(root: Path) -> None:
    original = (INSTALLED / SPLIT_APPENDS.path).read_text()
    apply_patches(root)
    patched = (root / SPLIT_APPENDS.path).read_text()
    start = original.index(SPLIT_APPENDS.scope_start)
    end = original.index(SPLIT_APPENDS.scope_end)
    assert patched[:start] == original[:start] and patched.endswith(original[end:])
    scope = patched[start : len(patched) - len(original) + end]
    split = scope.index("static_cast<int64_t>(rope_mode_ == RoPEMode::kNormal),")
    assert scope.index("pages_[local_layer_id], append_position_map_view_,", split) < scope.index(");", split)
    # the append before attending is left to the split; the one after attending (prefill chunks) is TVM's
    assert "if (append_before_attn_ && rope_ext_factors_.has_value()) {" in scope
    assert "if (!append_before_attn_) {\n      f_transpose_append_mha_" in scope


def test_another_tvm_source_is_refused_naming_the_file(staged: Path) -> None:
    staged.write_text(staged.read_text().replace("void ResetAttnAuxDataCopy() final {}", "void Reset() final {}"))
    with pytest.raises(ToolchainError, match="attn_utils.h has 0 copies of") as err:
        apply_patches(staged.parents[3])
    assert "apache-tvm==0.27.0.post1" in (err.value.tip or "")


def test_a_source_without_the_plain_manager_is_refused(staged: Path) -> None:
    staged.write_text("// no aux-data managers here\n")
    with pytest.raises(ToolchainError, match="attn_utils.h has no 'class PlainPagedKVCacheAuxDataManager'"):
        apply_patches(staged.parents[3])


@pytest.mark.toolchain
def test_the_patch_text_is_part_of_the_runtime_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = link.runtime_key()
    monkeypatch.setattr(link, "patches_key", lambda: "another patch")
    assert link.runtime_key() != key
