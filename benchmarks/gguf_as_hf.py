"""A GGUF as a float32 Hugging Face folder, for benchmarks/quantization.py.

For files whose blocks webbuild's schemes will not round a second time (K-quants such as Q4_K_M's): transformers
dequantizes the tensors to float32 and converts the tokenizer; the chat template is copied from the GGUF's metadata
when it has one. The quantization loss measured from the folder is then ours against the GGUF's dequantized values
(BENCHMARKS.md "Families: build time and bundle size").

Usage: .venv/bin/python benchmarks/gguf_as_hf.py MODEL.gguf OUT_DIR   (transformers' GGUF loader needs accelerate,
in the bench extra)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf_file", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    import gguf
    import transformers
    from safetensors.torch import save_file

    where = {"pretrained_model_name_or_path": args.gguf_file.parent, "gguf_file": args.gguf_file.name}
    tokenizer = transformers.AutoTokenizer.from_pretrained(**where)
    model = transformers.AutoModelForCausalLM.from_pretrained(**where, dtype="float32")
    args.out.mkdir(parents=True)
    tensors = {name: t.contiguous() for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del tensors["lm_head.weight"]  # the same tensor as the embedding, which the checkpoint holds once
    save_file(tensors, args.out / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the folder holds float32 values: no GGUF left to dequantize
    (args.out / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer.save_pretrained(args.out)
    field = gguf.GGUFReader(args.gguf_file).fields.get("tokenizer.chat_template")
    if field is not None:  # transformers' tokenizer conversion leaves it out
        path = args.out / "tokenizer_config.json"
        config = json.loads(path.read_text()) | {"chat_template": bytes(field.parts[field.data[0]]).decode()}
        path.write_text(json.dumps(config, indent=1))


if __name__ == "__main__":
    main()
