from __future__ import annotations

import gguf
import numpy as np
import pytest
from tiny_llama import llama_cpp_permute, tiny_llama_model, write_gguf

from webbuild.build.arch import llama
from webbuild.build.arch.weights import permute_qk, unpermute_qk
from webbuild.build.quantize import QuantizedTensor
from webbuild.build.weights.gguf import load_gguf
from webbuild.errors import CorruptFileError, UnsupportedError

T = gguf.GGMLQuantizationType
CONFIG_KEYS = [
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
    "vocab_size",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
]


def test_f32_round_trip_gives_back_hf_names_layout_and_config(tmp_path, tiny_llama):
    model = load_gguf(write_gguf(tmp_path / "m.gguf", tiny_llama))
    assert model.architecture == "llama"
    assert sorted(model.tensors) == sorted(tiny_llama.tensors)
    for name, expected in tiny_llama.tensors.items():
        assert model.tensors[name].dtype == np.float32
        np.testing.assert_array_equal(model.tensors[name], expected, err_msg=name)
    assert {k: model.config[k] for k in CONFIG_KEYS} == {k: tiny_llama.config[k] for k in CONFIG_KEYS}


def test_q_and_k_rows_are_unpermuted(tmp_path, tiny_llama):
    """The file holds llama.cpp's permuted Q/K rows; reading gives back the HF original, not the file's order."""
    q = "model.layers.1.self_attn.q_proj.weight"
    k = "model.layers.1.self_attn.k_proj.weight"
    model = load_gguf(write_gguf(tmp_path / "m.gguf", tiny_llama))
    np.testing.assert_array_equal(model.tensors[q], tiny_llama.tensors[q])
    np.testing.assert_array_equal(model.tensors[k], tiny_llama.tensors[k])
    assert not np.array_equal(llama_cpp_permute(tiny_llama.tensors[q], 4), tiny_llama.tensors[q])
    stored = {t.name: t for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}["blk.1.attn_k.weight"]
    np.testing.assert_array_equal(stored.data, llama_cpp_permute(tiny_llama.tensors[k], 2))


def test_permute_and_unpermute_are_inverse_for_weights_and_biases():
    rng = np.random.default_rng(1)
    for shape in [(8 * 16, 24), (8 * 16,)]:
        w = rng.standard_normal(shape)
        np.testing.assert_array_equal(unpermute_qk(permute_qk(w, 8), 8), w)
        np.testing.assert_array_equal(permute_qk(w, 8), llama_cpp_permute(w, 8))


def test_unpermuting_turns_interleaved_rope_into_rotate_half_rope():
    """Why the rows move: llama.cpp rotates adjacent pairs (2i, 2i+1); HF rotates (i, i + d/2). Attention
    scores from GGUF rows with the former equal those from unpermuted rows with the latter."""
    rng = np.random.default_rng(2)
    heads, d, hidden, n = 2, 8, 16, 5
    pos = np.arange(n)[:, None, None]
    freqs = 10000.0 ** (-np.arange(0, d, 2) / d)
    angle = pos * freqs  # [n, 1, d/2]

    def interleaved(x):
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * np.cos(angle) - x1 * np.sin(angle)
        out[..., 1::2] = x0 * np.sin(angle) + x1 * np.cos(angle)
        return out

    def rotate_half(x):
        cos, sin = np.cos(np.concatenate([angle, angle], -1)), np.sin(np.concatenate([angle, angle], -1))
        return x * cos + np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1) * sin

    h = rng.standard_normal((n, hidden))
    wq, wk = rng.standard_normal((heads * d, hidden)), rng.standard_normal((heads * d, hidden))

    def scores(wq, wk, rope):
        q, k = rope((h @ wq.T).reshape(n, heads, d)), rope((h @ wk.T).reshape(n, heads, d))
        return np.einsum("thd,shd->hts", q, k)

    gguf_scores = scores(wq, wk, interleaved)
    np.testing.assert_allclose(scores(unpermute_qk(wq, heads), unpermute_qk(wk, heads), rotate_half), gguf_scores)
    assert not np.allclose(scores(wq, wk, rotate_half), gguf_scores)


def test_quantized_tensors_keep_their_blocks_and_read_as_their_float32_values(tmp_path, tiny_llama):
    qtypes = {name: T.Q4_1 for name in tiny_llama.tensors if name.endswith("proj.weight")}
    qtypes["model.embed_tokens.weight"] = T.Q8_0
    qtypes["model.layers.0.mlp.up_proj.weight"] = T.F16
    qtypes["model.layers.0.mlp.down_proj.weight"] = T.BF16
    model = load_gguf(write_gguf(tmp_path / "q.gguf", tiny_llama, qtypes))
    for name, original in tiny_llama.tensors.items():
        got = model.tensors[name]
        assert got.dtype == np.float32 and got.shape == original.shape, name
        qtype = qtypes.get(name, T.F32)
        # exactly what gguf's own dequantizer gives for the stored blocks, in HF row order
        heads = {"q_proj": 4, "k_proj": 2}.get(name.split(".")[-2])
        stored = llama_cpp_permute(original, heads) if heads else original
        expected = gguf.quants.dequantize(gguf.quants.quantize(stored, qtype), qtype).reshape(original.shape)
        np.testing.assert_array_equal(got, unpermute_qk(expected, heads) if heads else expected, err_msg=name)
        tolerance = {T.Q4_1: 0.1, T.Q8_0: 0.01}.get(qtype, 0.002)
        np.testing.assert_allclose(got, original, atol=tolerance, err_msg=name)
        # quantized ones stay the file's blocks (Q/K rows moved whole), for the quantize step to keep unrounded
        assert isinstance(got, QuantizedTensor) == (qtype in (T.Q4_1, T.Q8_0)), name
        if isinstance(got, QuantizedTensor):
            blocks = gguf.quants.quantize(stored, qtype)
            np.testing.assert_array_equal(got.blocks, unpermute_qk(blocks, heads) if heads else blocks, err_msg=name)


def test_an_output_tensor_means_untied_embeddings(tmp_path):
    tiny = tiny_llama_model(tied=False)
    model = load_gguf(write_gguf(tmp_path / "u.gguf", tiny))
    assert model.config["tie_word_embeddings"] is False
    np.testing.assert_array_equal(model.tensors["lm_head.weight"], tiny.tensors["lm_head.weight"])


def test_gguf_names_map_to_hf_names():
    hf_tensor_name = llama.GGUF.hf_name
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("output.weight") == "lm_head.weight"
    assert hf_tensor_name("output_norm.weight") == "model.norm.weight"
    assert hf_tensor_name("blk.12.attn_output.weight") == "model.layers.12.self_attn.o_proj.weight"
    assert hf_tensor_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_tensor_name("blk.3.attn_q.bias") == "model.layers.3.self_attn.q_proj.bias"
    assert hf_tensor_name("rope_freqs.weight") is None


def test_other_architectures_are_unsupported(tmp_path, tiny_llama):
    path = write_gguf(tmp_path / "g.gguf", tiny_llama, arch="mamba")
    with pytest.raises(UnsupportedError, match="'mamba' is not supported; supported: gemma3, llama, phi3, qwen"):
        load_gguf(path)


def test_unknown_tensors_are_named_not_dropped(tmp_path, tiny_llama):
    """Phi-3's longrope factors in a Llama file: llama.cpp does not read them for Llama, nor does webbuild."""
    name = "rope_factors_long.weight"
    path = write_gguf(tmp_path / "r.gguf", tiny_llama, extra=lambda w: w.add_tensor(name, np.ones(8, np.float32)))
    with pytest.raises(UnsupportedError, match=name):
        load_gguf(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "garbage after magic", "empty"])
def test_damaged_files_are_corrupt_file_errors_naming_the_file(tmp_path, tiny_llama, damage):
    path = write_gguf(tmp_path / "d.gguf", tiny_llama)
    data = path.read_bytes()
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(
        {
            "truncated": data[: len(data) * 2 // 3],
            "garbage": noise,
            "garbage after magic": data[:8] + noise,
            "empty": b"",
        }[damage]
    )
    with pytest.raises(CorruptFileError, match=str(path)) as err:
        load_gguf(path)
    assert err.value.tip
