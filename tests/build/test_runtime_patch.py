"""webbuild.build.runtime_patch: the KV cache repair applies to the installed TVM's source, only inside the plain
aux-data manager, and refuses a source it was not written for (what the repair fixes in the browser:
tests/build/arch/test_families.py, the sliding-window browser test)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tvm

from webbuild.build import link
from webbuild.build.runtime_patch import PLAIN_AUX_SLOTS, apply_patches
from webbuild.errors import ToolchainError

INSTALLED = Path(tvm.__file__).parent / PLAIN_AUX_SLOTS.path


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    """A staged tree holding a copy of the installed attn_utils.h."""
    dest = tmp_path / PLAIN_AUX_SLOTS.path
    dest.parent.mkdir(parents=True)
    shutil.copyfile(INSTALLED, dest)
    return dest


def test_the_plain_manager_gets_a_slot_per_copy_and_the_rest_is_unchanged(staged: Path) -> None:
    original = INSTALLED.read_text()
    apply_patches(staged.parents[3])
    patched = staged.read_text()
    for table in ("page_indptr_on_depths_device_", "page_indices_on_depths_device_", "k_rope_pos_offset_"):
        assert f"NextSlot(&{table}" in patched
    assert "std::fill(slot_calls_.begin(), slot_calls_.end(), 0)" in patched  # ResetAttnAuxDataCopy
    start = original.index(PLAIN_AUX_SLOTS.scope_start)
    end = original.index(PLAIN_AUX_SLOTS.scope_end)
    assert patched[:start] == original[:start]
    assert patched.endswith(original[end:])  # the cached (CUDA/CPU) manager and what follows


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
