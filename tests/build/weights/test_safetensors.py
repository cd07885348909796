from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file
from tiny_llama import tiny_llama_model, write_hf_dir

from webbuild.build.weights.safetensors import load_hf_dir
from webbuild.errors import CorruptFileError, InputError, UnsupportedError


@pytest.mark.parametrize(("dtype", "shards", "atol"), [("float32", 1, 0), ("float16", 1, 1e-3), ("bfloat16", 3, 4e-3)])
def test_reads_single_and_sharded_checkpoints_as_float32(tmp_path, tiny_llama, dtype, shards, atol):
    model = load_hf_dir(write_hf_dir(tmp_path / "m", tiny_llama, dtype=dtype, shards=shards))
    assert model.config == tiny_llama.config
    assert json.loads(model.tokenizer_json)["model"]["type"] == "BPE"
    assert model.tokenizer_config["eos_token"] == "<|im_end|>"
    assert sorted(model.tensors) == sorted(tiny_llama.tensors)
    for name, expected in tiny_llama.tensors.items():
        assert model.tensors[name].dtype == np.float32
        np.testing.assert_allclose(model.tensors[name], expected, atol=atol, rtol=0, err_msg=name)


def test_missing_files_are_all_named(tmp_path, tiny_llama):
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    (folder / "tokenizer.json").unlink()
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match="missing: tokenizer.json, \\*.safetensors") as err:
        load_hf_dir(folder)
    assert str(folder) in str(err.value)


def test_a_missing_shard_is_named(tmp_path, tiny_llama):
    folder = write_hf_dir(tmp_path / "m", tiny_llama, shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="model-00002-of-00002.safetensors"):
        load_hf_dir(folder)


@pytest.mark.parametrize("cut", [10, 1000, -100])
def test_a_damaged_safetensors_file_is_corrupt(tmp_path, tiny_llama, cut):
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:cut])
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        load_hf_dir(folder)


def test_tied_embeddings_drop_a_stored_lm_head_copy(tmp_path, tiny_llama):
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    tensors = dict(tiny_llama.tensors, **{"lm_head.weight": tiny_llama.tensors["model.embed_tokens.weight"]})
    save_file(tensors, str(folder / "model.safetensors"))
    assert "lm_head.weight" not in load_hf_dir(folder).tensors


def test_no_lm_head_means_tied(tmp_path, tiny_llama):
    config = dict(tiny_llama.config, tie_word_embeddings=False)
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    (folder / "config.json").write_text(json.dumps(config))
    assert load_hf_dir(folder).config["tie_word_embeddings"] is True


def test_untied_checkpoints_keep_lm_head(tmp_path):
    model = load_hf_dir(write_hf_dir(tmp_path / "m", tiny_llama_model(tied=False)))
    assert "lm_head.weight" in model.tensors


def test_integer_tensors_are_unsupported(tmp_path, tiny_llama):
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    save_file(
        {"model.layers.0.self_attn.q_proj.qweight": np.zeros((4, 4), np.int32)}, str(folder / "model.safetensors")
    )
    with pytest.raises(UnsupportedError, match="q_proj.qweight has dtype int32"):
        load_hf_dir(folder)


def test_other_architectures_are_unsupported(tmp_path, tiny_llama):
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    (folder / "config.json").write_text(json.dumps(dict(tiny_llama.config, model_type="mamba")))
    with pytest.raises(UnsupportedError, match="'mamba' is not supported; supported: gemma3_text, llama, phi3"):
        load_hf_dir(folder)


# --- generation_config.json: where instruct checkpoints list the tokens that end a reply --------------------------


def test_generation_config_is_read_when_present_and_empty_when_absent(tmp_path, tiny_llama):
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    assert load_hf_dir(folder).generation_config == {}
    generation = {"bos_token_id": 1, "eos_token_id": [2, 0], "temperature": 0.7}  # Qwen2.5-Instruct's shape
    (folder / "generation_config.json").write_text(json.dumps(generation))
    assert load_hf_dir(folder).generation_config == generation


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"eos_token_id": [2, 0]', "generation_config.json is not valid JSON"),
        ("[2, 0]", "generation_config.json does not hold a JSON object"),
        ('{"eos_token_id": "<|im_end|>"}', "generation_config.json: eos_token_id must be a token id or a list"),
        ('{"eos_token_id": [2, null]}', "generation_config.json: eos_token_id must be a token id or a list"),
    ],
)
def test_a_malformed_generation_config_is_named(tmp_path, tiny_llama, text, message):
    folder = write_hf_dir(tmp_path / "m", tiny_llama)
    (folder / "generation_config.json").write_text(text)
    with pytest.raises(CorruptFileError, match=message) as err:
        load_hf_dir(folder)
    assert str(folder / "generation_config.json") in str(err.value)
