"""A GGUF source builds into the very model it holds: on the CPU engine, a Q4_1 (Q8_0 embedding) file as q4f32_m,
a Q8_0 file as q8f32_s and a Q4_0 file as MLC's q4f32_1 give the same logits, bit for bit, as the unquantized
build (q0f32) of the file's dequantized float32 weights: the layouts keep the values, and the CPU schedule adds
the products of quantized and float linears in the same order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf
import numpy as np
import pytest
from tiny_llama import tiny_llama_model, write_gguf

from webbuild.build.prepare import prepare_model
from webbuild.build.source import load_source
from webbuild.engine.engine import Engine, EngineConfig

pytestmark = pytest.mark.toolchain

T = gguf.GGMLQuantizationType
PROMPT = [5, 17, 42, 99, 3, 60, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]  # > one prefill chunk
# (GGUF type of the linear layers, of the tied embedding/head) -> the scheme that keeps them
CASES = {"q4f32_m": (T.Q4_1, T.Q8_0), "q8f32_s": (T.Q8_0, T.Q8_0), "q4f32_1": (T.Q4_0, T.Q4_0)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory):
    """scheme -> (the GGUF as read, the same with every tensor dequantized to float32)."""
    tiny, out = tiny_llama_model(seed=3), {}
    for scheme, (linear, embedding) in CASES.items():
        qtypes = {n: linear for n in tiny.tensors if n.endswith("proj.weight")}
        qtypes["model.embed_tokens.weight"] = embedding
        path = write_gguf(Path(tmp_path_factory.mktemp(scheme)) / "m.gguf", tiny, qtypes)
        source = load_source(str(path))
        source.defaults = {"context_window_size": 128, "prefill_chunk_size": 16}
        floats = {name: np.asarray(t, dtype=np.float32) for name, t in source.tensors.items()}
        out[scheme] = (source, dataclasses.replace(source, tensors=floats))
    return out


@pytest.mark.parametrize("scheme", list(CASES))
def test_logits_equal_the_dequantized_float32_build(sources, scheme: str) -> None:
    source, floats = sources[scheme]
    prepared = prepare_model(source, scheme)
    assert prepared.quant_report.requantized == []
    one = EngineConfig(mode="interactive")
    quantized, reference = Engine(prepared, config=one), Engine(prepare_model(floats, "q0f32"), config=one)
    np.testing.assert_array_equal(quantized.score_positions(PROMPT), reference.score_positions(PROMPT))  # prefill
    decoded = quantized.score(PROMPT[:4], PROMPT[4:9]), reference.score(PROMPT[:4], PROMPT[4:9])
    for ours, theirs in zip(*decoded, strict=True):
        np.testing.assert_array_equal(ours, theirs)  # decode: the GEMV path
