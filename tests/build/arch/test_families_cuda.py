"""Every family on the CUDA engine: the same weights give the CPU engine's logits at every position (over 4 or
more prefill chunks, so later chunks attend over the cached prefix and the windowed layers past their window) and
its greedy tokens. The CPU engine is checked against transformers (test_families.py, test_gemma3.py), so it is the
reference on a GPU machine, where transformers is not carried. Skipped where there is no CUDA GPU (CI).

``$WEBBUILD_TINY_FAMILIES`` names a folder of the tiny HF directories made beforehand
(``scripts/make_tiny_families.py``, carried by ``scripts/make_gpu_carry.sh``); without it they are made here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tvm
from family_checks import DEVICE_TOLERANCE, DEVICE_VARIANTS, device_agreement, write_variant

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA GPU on this machine"),
]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = os.environ.get("WEBBUILD_TINY_FAMILIES")
    if made:
        return Path(made)
    pytest.importorskip("transformers", reason="making the tiny models needs transformers")
    root = tmp_path_factory.mktemp("families")
    for name in DEVICE_VARIANTS:
        write_variant(root, name)
    return root


@pytest.mark.parametrize("scheme", sorted(DEVICE_TOLERANCE))
@pytest.mark.parametrize("variant", DEVICE_VARIANTS)
def test_cuda_engine_matches_the_cpu_engine(tiny_dirs: Path, variant: str, scheme: str) -> None:
    agreement = device_agreement(tiny_dirs / variant, scheme)
    assert agreement.chunks >= 4
    assert variant.endswith("window16") == (agreement.sliding_window == 16)
    assert agreement.rel_max <= DEVICE_TOLERANCE[scheme], agreement
    assert agreement.top1 == 1.0, agreement
    assert agreement.greedy_same == agreement.greedy_of, agreement
