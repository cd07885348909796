"""A Hugging Face folder of a Llama shape with random weights, for speed figures on the GPU machine
(`webbuild package` it here, carry the site with scripts/make_gpu_browser_carry.sh).

Speed does not depend on the weights' values, but carrying them does: every tensor repeats one random block of
BLOCK values (a prime length, so rows differ from one another), so the quantized shards compress to almost
nothing. The tokenizer is byte-level BPE with filler tokens up to the vocabulary size, so any generated id
decodes. Default shape: Llama 3.2 1B (hidden 2048, 16 layers, 32 query / 8 key-value heads, vocab 128256).

usage: .venv/bin/python scripts/make_bench_model.py OUT [--hidden 2048 --layers 16 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

BLOCK = 65_521
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tokenizer(vocab: int) -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = SPECIALS + alphabet
    tokens += [f"Ġw{i}" for i in range(vocab - len(tokens))]  # " w123": decodable, never produced by encoding
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok


def tensors(cfg: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    block = (np.random.default_rng(seed).standard_normal(BLOCK) * 0.02).astype(np.float16)

    def weight(*shape: int) -> np.ndarray:
        n = int(np.prod(shape))
        return np.resize(block, n).reshape(shape)

    h, inter, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["hidden_size"] // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    out = {"model.embed_tokens.weight": weight(cfg["vocab_size"], h), "model.norm.weight": np.ones(h, np.float16)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out |= {
            p + "input_layernorm.weight": np.ones(h, np.float16),
            p + "post_attention_layernorm.weight": np.ones(h, np.float16),
            p + "self_attn.q_proj.weight": weight(q, h),
            p + "self_attn.k_proj.weight": weight(kv, h),
            p + "self_attn.v_proj.weight": weight(kv, h),
            p + "self_attn.o_proj.weight": weight(h, q),
            p + "mlp.gate_proj.weight": weight(inter, h),
            p + "mlp.up_proj.weight": weight(inter, h),
            p + "mlp.down_proj.weight": weight(h, inter),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "vocab_size": args.vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(cfg, indent=1))
    (args.out / "tokenizer.json").write_text(tokenizer(args.vocab).to_str())
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False, "chat_template": TEMPLATE}
    (args.out / "tokenizer_config.json").write_text(json.dumps(config))
    save_file(tensors(cfg, args.seed), str(args.out / "model.safetensors"))
    print(args.out)


if __name__ == "__main__":
    main()
