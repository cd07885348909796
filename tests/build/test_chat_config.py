"""mlc-chat-config.json: every field WebLLM / MLC read, filled from HF config + tokenizer config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hf_tiny
import pytest

from webbuild.build.chat_config import build_chat_config, write_chat_config

SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.42.3",
}

TOKENIZER_CONFIG: dict[str, Any] = {
    "chat_template": SMOL_TEMPLATE,
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "pad_token": "<|im_end|>",
}

TOKENIZER_JSON = json.dumps(
    {
        "added_tokens": [
            {"id": 0, "content": "<|endoftext|>", "special": True},
            {"id": 1, "content": "<|im_start|>", "special": True},
            {"id": 2, "content": "<|im_end|>", "special": True},
        ],
        "decoder": {"type": "ByteLevel", "add_prefix_space": True},
        "model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3}},
    }
)

TOP_LEVEL = [
    "version",
    "model_type",
    "quantization",
    "model_config",
    "vocab_size",
    "context_window_size",
    "sliding_window_size",
    "prefill_chunk_size",
    "attention_sink_size",
    "tensor_parallel_shards",
    "temperature",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "top_p",
    "tokenizer_files",
    "tokenizer_info",
    "conv_template",
    "tool_call_format",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
]
CONV_FIELDS = {
    "name",
    "system_template",
    "system_message",
    "system_prefix_token_ids",
    "add_role_after_system_message",
    "roles",
    "role_templates",
    "messages",
    "seps",
    "role_content_sep",
    "role_empty_sep",
    "stop_str",
    "stop_token_ids",
    "function_string",
    "use_function_calling",
}


def _smol(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        quantization="q4f32_1",
        context_window_size=2048,
        prefill_chunk_size=512,
        temperature=0.2,
        top_p=0.9,
        tokenizer_json=TOKENIZER_JSON,
    )
    args.update(overrides)
    return build_chat_config(CONFIG, TOKENIZER_CONFIG, **args)


def test_field_set_and_values() -> None:
    cfg = _smol()
    assert list(cfg) == TOP_LEVEL
    assert cfg["version"] == "0.1.0"
    assert (cfg["model_type"], cfg["quantization"], cfg["vocab_size"]) == ("llama", "q4f32_1", 49152)
    assert (cfg["context_window_size"], cfg["prefill_chunk_size"]) == (2048, 512)
    assert (cfg["sliding_window_size"], cfg["attention_sink_size"], cfg["tensor_parallel_shards"]) == (
        -1,
        -1,
        1,
    )
    assert (cfg["temperature"], cfg["top_p"]) == (0.2, 0.9)
    assert (cfg["presence_penalty"], cfg["frequency_penalty"], cfg["repetition_penalty"]) == (0.0, 0.0, 1.0)
    assert cfg["tokenizer_files"] == ["tokenizer.json"]
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)


def test_the_quantization_policy_follows_the_scheme_name() -> None:
    policy = {"linear": "q4m", "embedding": "q8", "head": "q8"}
    cfg = _smol(quantization="q4f32_m", quantization_policy=policy)
    keys = list(cfg)
    assert keys[keys.index("quantization") + 1] == "quantization_policy" and cfg["quantization_policy"] == policy
    assert [k for k in keys if k != "quantization_policy"] == TOP_LEVEL


def test_model_config_has_arch_fields_and_runtime_sizes() -> None:
    mc = _smol()["model_config"]
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "rms_norm_eps",
        "rope_theta",
        "vocab_size",
        "tie_word_embeddings",
    ):
        assert mc[key] == CONFIG[key]
    assert mc["head_dim"] == 64
    assert mc["position_embedding_base"] == 100000.0
    assert (mc["context_window_size"], mc["prefill_chunk_size"]) == (2048, 512)
    assert (mc["tensor_parallel_shards"], mc["max_batch_size"]) == (1, 1)
    assert "transformers_version" not in mc and "architectures" not in mc and "torch_dtype" not in mc


def test_chatml_conv_template() -> None:
    conv = _smol()["conv_template"]
    assert set(conv) == CONV_FIELDS
    assert conv["name"] == "chatml"
    assert conv["system_template"] == "<|im_start|>system\n{system_message}<|im_end|>\n"
    assert conv["system_message"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert conv["roles"]["user"] == "<|im_start|>user"
    assert conv["roles"]["assistant"] == "<|im_start|>assistant"
    assert conv["seps"] == ["<|im_end|>\n"]
    assert (conv["role_content_sep"], conv["role_empty_sep"]) == ("\n", "\n")
    assert conv["stop_str"] == ["<|im_end|>"]
    assert conv["stop_token_ids"] == [2]
    assert conv["messages"] == [] and conv["use_function_calling"] is False


def test_chatml_with_escaped_newlines_in_template() -> None:
    tpl = "{{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}{{ '<|im_start|>' + m + '<|im_end|>' }}"
    cfg = build_chat_config(
        CONFIG,
        {"chat_template": tpl},
        quantization="q4f16_1",
        context_window_size=1024,
        prefill_chunk_size=128,
    )
    assert cfg["conv_template"]["name"] == "chatml"
    assert cfg["conv_template"]["system_message"] == "Be brief."


def test_stop_tokens_come_from_all_eos_ids() -> None:
    cfg = build_chat_config(
        {**CONFIG, "eos_token_id": [0, 2]},
        TOKENIZER_CONFIG,
        quantization="q4f16_1",
        context_window_size=1024,
        prefill_chunk_size=128,
        tokenizer_json=TOKENIZER_JSON,
    )
    assert cfg["eos_token_id"] == [0, 2]
    assert cfg["conv_template"]["stop_token_ids"] == [0, 2]


@pytest.mark.parametrize(
    ("generation_eos", "eos", "stops"),
    [
        ([2, 0], [2, 0], [2, 0]),  # Qwen2.5-Instruct: <|im_end|>, then <|endoftext|>
        (0, [2, 0], [2, 0]),  # one id
        ([2], 2, [2]),  # nothing new
        (None, 2, [2]),
    ],
)
def test_generation_config_eos_ids_join_the_config_ones(generation_eos: Any, eos: Any, stops: list[int]) -> None:
    """transformers' generate() stops at generation_config.json's eos_token_id, which instruct checkpoints use to
    list more ends than config.json (Phi-3: [32000, 32001, 32007] beside 32000)."""
    cfg = _smol(generation_config={"eos_token_id": generation_eos, "temperature": 0.7})
    assert cfg["eos_token_id"] == eos
    assert cfg["conv_template"]["stop_token_ids"] == stops


# kind: (the token that ends the text, the token the family's template closes a reply with)
FAMILY_ENDS = {
    "qwen": ("<|endoftext|>", "<|im_end|>"),  # Qwen2, Qwen2.5, Qwen3; SmolLM2's ChatML too
    "llama3": ("<|end_of_text|>", "<|eot_id|>"),
    "gemma": ("<eos>", "<end_of_turn>"),
    "phi3": ("<|endoftext|>", "<|end|>"),
}


@pytest.mark.parametrize("kind", FAMILY_ENDS)
def test_each_family_stops_at_the_token_its_template_closes_a_reply_with(kind: str) -> None:
    """Files that name only the end of the text as eos (a Gemma 3 instruct GGUF: <eos>, no eot id) still stop a
    reply at the end of its turn, the token the chat template writes right after a reply."""
    tokenizer = hf_tiny.tokenizer_for(kind)
    end_of_text, end_of_turn = (tokenizer.token_to_id(t) for t in FAMILY_ENDS[kind])
    cfg = build_chat_config(
        {**CONFIG, "eos_token_id": end_of_text},
        hf_tiny.tokenizer_config(kind) | {"eos_token": FAMILY_ENDS[kind][0]},
        quantization="q0f32",
        context_window_size=512,
        prefill_chunk_size=64,
        tokenizer_json=tokenizer.to_str(),
    )
    assert cfg["eos_token_id"] == end_of_text
    assert cfg["conv_template"]["stop_token_ids"] == [end_of_text, end_of_turn]


def _turns(after_reply: str, before: str = "") -> str:
    """A plain ``role: content`` template that writes ``before`` ahead of each message and ``after_reply`` after
    each reply."""
    return (
        "{% for m in messages %}{{ '" + before + "' + m['role'] + ': ' + m['content'] }}"
        "{% if m['role'] == 'assistant' %}{{ '" + after_reply + "' }}{% endif %}{{ '\\n' }}{% endfor %}"
    )


_ADDED = [
    {"id": 0, "content": "<|endoftext|>", "special": True},
    {"id": 1, "content": "<|start|>", "special": True},
    {"id": 2, "content": "<|end|>", "special": True},
]
_VOCAB = {"<|endoftext|>": 0, "<|start|>": 1, "<|end|>": 2, "a": 3}
WHOLE = json.dumps({"added_tokens": _ADDED, "model": {"type": "BPE", "vocab": _VOCAB}})
# The same vocabulary, but <|end|> is a plain piece: the tokenizer never matches its text as that one token.
PIECE = json.dumps({"added_tokens": _ADDED[:2], "model": {"type": "BPE", "vocab": _VOCAB}})


@pytest.mark.parametrize(
    ("template", "tokenizer_json", "stops"),
    [
        (_turns("<|end|>"), WHOLE, [0, 2]),  # a marker, matched whole, closes each reply: a stop
        (_turns(""), WHOLE, [0]),  # replies closed by plain text
        (_turns("", before="<|end|>"), WHOLE, [0]),  # the marker opens messages: inside a turn
        (_turns("<|start|>"), WHOLE, [0]),  # a special token that is no end-of-turn marker closes replies
        (_turns("<|end|>"), PIECE, [0]),  # the marker's text is no single token the model was trained on
        ("{{ raise_exception('no assistant messages') }}", WHOLE, [0]),  # no reply to read: no stop, no failure
    ],
    ids=["closing-marker", "plain-text", "marker-inside-turn", "other-special", "not-one-token", "unrenderable"],
)
def test_only_a_known_marker_that_closes_replies_becomes_a_stop(template: str, tokenizer_json: str, stops: list[int]):
    """A stop the model writes inside a reply would cut it short, so only the token written right after a reply
    counts, and only when it is a known end-of-turn marker matched whole."""
    cfg = build_chat_config(
        {**CONFIG, "eos_token_id": 0},
        {"chat_template": template},
        quantization="q0f32",
        context_window_size=512,
        prefill_chunk_size=64,
        tokenizer_json=tokenizer_json,
    )
    assert cfg["conv_template"]["name"] == "generic"
    assert (cfg["eos_token_id"], cfg["conv_template"]["stop_token_ids"]) == (0, stops)


def test_ids_resolve_from_tokenizer_when_config_lacks_them() -> None:
    config = {k: v for k, v in CONFIG.items() if not k.endswith("_token_id")}
    cfg = build_chat_config(
        config,
        TOKENIZER_CONFIG,
        quantization="q4f16_1",
        context_window_size=1024,
        prefill_chunk_size=128,
        tokenizer_json=TOKENIZER_JSON,
    )
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)


def test_generic_fallback_for_non_chatml_template() -> None:
    tok_cfg = {
        "chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}",
        "bos_token": "<s>",
        "add_bos_token": True,
    }
    tok_json = json.dumps(
        {
            "added_tokens": [{"id": 1, "content": "<s>"}, {"id": 2, "content": "</s>"}],
            "decoder": {"type": "Sequence", "decoders": [{"type": "Replace"}, {"type": "ByteFallback"}]},
            "model": {"type": "BPE", "vocab": {}},
        }
    )
    cfg = build_chat_config(
        {**CONFIG, "eos_token_id": 2},
        tok_cfg,
        quantization="q0f32",
        context_window_size=512,
        prefill_chunk_size=64,
        tokenizer_json=tok_json,
        model_type="llama",
    )
    conv = cfg["conv_template"]
    assert set(conv) == CONV_FIELDS
    assert conv["name"] == "generic"
    assert conv["stop_token_ids"] == [2]
    assert conv["system_prefix_token_ids"] == [1]
    assert cfg["tokenizer_info"]["token_postproc_method"] == "byte_fallback"


def test_tokenizer_info_byte_level() -> None:
    assert _smol()["tokenizer_info"] == {
        "token_postproc_method": "byte_level",
        "prepend_space_in_encode": False,
        "strip_space_in_decode": False,
    }


def test_write_chat_config(tmp_path: Path) -> None:
    cfg = _smol()
    path = write_chat_config(tmp_path / "model", cfg)
    assert path == tmp_path / "model" / "mlc-chat-config.json"
    assert json.loads(path.read_text()) == cfg
