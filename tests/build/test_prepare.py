"""prepare_model's quantization step: which scheme a source gets, and the policy kept through a bundle."""

from __future__ import annotations

import json

import gguf
import pytest
from tiny_llama import tiny_llama_model, write_gguf

from webbuild.build.prepare import prepare_model, read_model_files, write_model_files
from webbuild.build.source import load_source

T = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def gguf_source(tmp_path_factory: pytest.TempPathFactory):
    tiny = tiny_llama_model()
    qtypes = {n: T.Q4_1 for n in tiny.tensors if n.endswith("proj.weight")} | {"model.embed_tokens.weight": T.Q8_0}
    return load_source(str(write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q4_1.gguf", tiny, qtypes)))


def test_the_default_scheme_keeps_what_the_source_has(gguf_source) -> None:
    prepared = prepare_model(gguf_source)
    assert prepared.scheme.name == "q4f32_m" and prepared.quant_report.requantized == []
    assert prepare_model(gguf_source, "q4f32_1").quant_report.requantized == ["embedding", "linear"]
    gguf_source.defaults = {"quantization": "q0f32"}  # a preset's choice wins over the source's
    try:
        assert prepare_model(gguf_source).scheme.name == "q0f32"
    finally:
        gguf_source.defaults = {}


def test_an_embedding_override_is_written_and_read_back(gguf_source, tmp_path) -> None:
    prepared = prepare_model(gguf_source, "q4f32_m", embeddings="float")
    assert prepared.params["model.embed_tokens.weight"].dtype == "float32"
    write_model_files(prepared, tmp_path)
    chat_config = json.loads((tmp_path / "mlc-chat-config.json").read_text())
    assert chat_config["quantization_policy"] == {"linear": "q4m", "embedding": "float", "head": "float"}
    back = read_model_files(tmp_path, "tiny")
    assert back.scheme == prepared.scheme and list(back.params) == list(prepared.params)


def test_bits_per_param_counts_source_weights(gguf_source, tmp_path) -> None:
    """q4m weights cost 5 bits (4 + a float16 scale and minimum per 32), Q8_0 embeddings 8.5."""
    prepared = prepare_model(gguf_source, "q4f32_m")
    summary = write_model_files(prepared, tmp_path)
    source = {n: t.size for n, t in gguf_source.tensors.items()}
    assert summary.param_count == sum(source.values())
    embedding, norms = source["model.embed_tokens.weight"], sum(s for n, s in source.items() if "norm" in n)
    linear = summary.param_count - embedding - norms
    expected_bytes = linear * 5 / 8 + embedding * 8.5 / 8 + norms * 4
    # q4m/q8 scale words of a row with an odd number of groups carry one float16 of padding
    assert expected_bytes <= summary.param_bytes <= expected_bytes * 1.05
