"""A tiny random-weight Llama (HF layout, byte-level BPE tokenizer, ChatML template) and writers that store it
as llama.cpp (GGUF) and Hugging Face (safetensors directory) would."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from webbuild.build.source import ModelSource

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s")]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TinyLlama:
    """HF-layout config, tensors and tokenizer pieces of a 2-layer random Llama (vocab = specials + bytes + merges)."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    tokens: list[str]
    merges: list[tuple[str, str]]
    token_types: list[int]

    def tokenizer(self) -> Tokenizer:
        """What the HF tokenizer.json of this vocabulary is (SmolLM style: digits split, byte-level BPE)."""
        tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(self.tokens)}, merges=self.merges))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        return tok

    def source(self, **defaults: Any) -> ModelSource:
        """As ``load_source`` would return it, with small context defaults for fast engines."""
        return ModelSource(
            model_id="tiny-llama",
            config=self.config,
            tokenizer_json=self.tokenizer().to_str(),
            tokenizer_config=self.tokenizer_config(),
            tensors=self.tensors,
            origin="tiny random Llama (test)",
            defaults={"context_window_size": 128, "prefill_chunk_size": 16} | defaults,
        )

    def tokenizer_config(self) -> dict[str, Any]:
        return {
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "pad_token": "<|im_end|>",
            "add_bos_token": False,
            "chat_template": CHAT_TEMPLATE,
        }


def tiny_llama_model(
    *, tied: bool = True, seed: int = 0, vocabulary: tuple[list[str], list[int]] | None = None
) -> TinyLlama:
    """``vocabulary``: other (tokens, GGUF token types) than the byte-level ones, e.g. a SentencePiece model's."""
    rng = np.random.default_rng(seed)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = SPECIAL_TOKENS + alphabet + ["".join(m) for m in MERGES]
    types = [3] * len(SPECIAL_TOKENS) + [1] * (len(tokens) - len(SPECIAL_TOKENS))
    if vocabulary is not None:
        tokens, types = vocabulary
    hidden, inter, heads, kv_heads, layers = 64, 128, 4, 2, 2
    head_dim = hidden // heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 256,
        "vocab_size": len(tokens),
        "tie_word_embeddings": tied,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * 0.1

    tensors = {"model.embed_tokens.weight": w(len(tokens), hidden), "model.norm.weight": 1 + w(hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": w(inter, hidden),
            p + "mlp.up_proj.weight": w(inter, hidden),
            p + "mlp.down_proj.weight": w(hidden, inter),
            p + "input_layernorm.weight": 1 + w(hidden),
            p + "post_attention_layernorm.weight": 1 + w(hidden),
        }
    if not tied:
        tensors["lm_head.weight"] = w(len(tokens), hidden)
    return TinyLlama(config, tensors, tokens, list(MERGES), types)


def wide_head_model(head_dim: int = 64):
    """The tiny Llama with SmolLM2's head size (4 heads of 64), still 2 layers and a 267-token vocabulary."""
    model = tiny_llama_model(seed=4)
    rng = np.random.default_rng(1)
    heads, kv_heads = model.config["num_attention_heads"], model.config["num_key_value_heads"]
    hidden = model.config["hidden_size"]
    model.config = model.config | {"head_dim": head_dim, "max_position_embeddings": 2048}
    for name in list(model.tensors):
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            rows = (heads if "q_proj" in name else kv_heads) * head_dim
            model.tensors[name] = rng.standard_normal((rows, hidden), dtype=np.float32) * 0.1
        elif name.endswith("o_proj.weight"):
            model.tensors[name] = rng.standard_normal((hidden, heads * head_dim), dtype=np.float32) * 0.1
    return model


def _gguf_name(hf: str) -> str:
    """HF -> GGUF tensor name, written independently of webbuild's own map so tests check it."""
    top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    stem, kind = hf.rsplit(".", 1)
    if stem in top:
        return f"{top[stem]}.{kind}"
    _, _, layer, module = stem.split(".", 3)
    part = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }[module]
    return f"blk.{layer}.{part}.{kind}"


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The row reordering llama.cpp's HF->GGUF converter applies to Llama Q/K projections."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(
    path: Path,
    model: TinyLlama,
    qtypes: dict[str, gguf.GGMLQuantizationType] | None = None,
    *,
    arch: str = "llama",
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    tokenizer: Callable[[gguf.GGUFWriter], None] | None = None,
) -> Path:
    """Write ``model`` as llama.cpp would: GGUF names, permuted Q/K, and ``qtypes`` ({hf name: type},
    default F32) applied with ``gguf.quants.quantize``; ``extra(writer)`` may add keys or tensors;
    ``tokenizer(writer)`` writes the tokenizer keys instead of the byte-level BPE ones."""
    c = model.config
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_rope_dimension_count(c["head_dim"])
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_vocab_size(c["vocab_size"])
    if tokenizer:
        tokenizer(writer)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm")
        writer.add_token_list(model.tokens)
        writer.add_token_types(model.token_types)
        writer.add_token_merges([" ".join(m) for m in model.merges])
        writer.add_bos_token_id(c["bos_token_id"])
        writer.add_eos_token_id(c["eos_token_id"])
        writer.add_pad_token_id(c["pad_token_id"])
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)
    if extra:  # more metadata or tensors, for tests of odd files
        extra(writer)
    for name, array in model.tensors.items():
        if name.endswith("q_proj.weight"):
            array = llama_cpp_permute(array, c["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            array = llama_cpp_permute(array, c["num_key_value_heads"])
        qtype = (qtypes or {}).get(name, gguf.GGMLQuantizationType.F32)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(_gguf_name(name), array)
        else:
            writer.add_tensor(_gguf_name(name), gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_hf_dir(path: Path, model: TinyLlama, *, dtype: str = "float32", shards: int = 1) -> Path:
    """Write ``model`` as a Hugging Face directory: config, tokenizer files, safetensors (sharded if asked)."""
    import ml_dtypes
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.config))
    (path / "tokenizer.json").write_text(model.tokenizer().to_str())
    (path / "tokenizer_config.json").write_text(json.dumps(model.tokenizer_config()))
    np_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    arrays = {k: v.astype(np_dtype) for k, v in model.tensors.items()}
    if shards == 1:
        save_file(arrays, str(path / "model.safetensors"))
        return path
    names = sorted(arrays)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({k: arrays[k] for k in part}, str(path / shard))
        weight_map |= {k: shard for k in part}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def package_tiny_site(
    root: Path, *, seed: int, quantization: str = "q4f32_1", name: str = "site", from_gguf: bool = False
) -> Path:
    """A real ``webbuild package`` site of a tiny random Llama (context 128, prefill chunks of 16) under ``root``,
    from a Hugging Face folder or, ``from_gguf``, a float32 GGUF file (its tokenizer rebuilt from the metadata)."""
    from webbuild.commands.package import PackageOptions, package

    model = tiny_llama_model(seed=seed)
    source = write_gguf(root / "tiny.gguf", model) if from_gguf else write_hf_dir(root / "tiny-hf", model)
    options = PackageOptions(
        str(source), out=root / name, quantizations=[quantization], context_window_size=128, prefill_chunk_size=16
    )
    return package(options).site
