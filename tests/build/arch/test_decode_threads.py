"""The GPU decode-attention kernel's thread block stays within the z limit (64) of CUDA and WebGPU, also at a head
size of 16 without grouped queries, where TVM 0.27 asks CUDA for 128 (seen: every Phi-3 tiny decode refused)."""

from __future__ import annotations

import re

import pytest
from family_checks import CHUNK, CONTEXT
from hf_tiny import make_hf_model

from webbuild.build.arch import get_architecture
from webbuild.build.arch.decode_threads import DECODE_FUNCTIONS
from webbuild.build.compile import make_target
from webbuild.build.export import export_model
from webbuild.build.quantize.scheme import get_scheme

pytestmark = pytest.mark.toolchain  # exports (no compile) take ~10 s each


def decode_blocks(family: str, target: str, **overrides: object) -> set[tuple[str, int]]:
    config = make_hf_model(family, **overrides).config.to_dict()
    cfg = get_architecture(config["model_type"]).config_from_hf(config, CONTEXT, CHUNK)
    mod = export_model(cfg, get_scheme("q0f32"), make_target(target)).mod
    bindings = r'thread_binding\((\d+), thread="threadIdx\.(\w)"\)'
    return {(axis, int(n)) for name in DECODE_FUNCTIONS for n, axis in re.findall(bindings, mod[name].script())}


@pytest.mark.parametrize("target", ["cuda", "webgpu"])
def test_head_size_16_without_grouping_gets_a_block_of_64_along_z(target):
    assert decode_blocks("phi3", target) == {("x", 4), ("y", 1), ("z", 64)}


def test_larger_heads_keep_tvms_block():
    assert decode_blocks("qwen3", "cuda") == {("x", 8), ("y", 2), ("z", 32)}  # head size 32, groups of 2
