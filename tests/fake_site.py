"""A model variant as the weight writer leaves it (configs, tokenizer, two shards, a library), with contents that
are not a real model: for assembling sites in tests."""

from __future__ import annotations

import json
from pathlib import Path

from webbuild.build.site import SiteVariant
from webbuild.site_format import Variant

FIXTURES = Path(__file__).parents[1] / "web_runtime" / "test" / "fixtures"
WASM = b"\x00asm\x01\x00\x00\x00"


def fake_variant(root: Path, model_id: str, quant: str, *, shard_bytes: int = 1000) -> SiteVariant:
    """A model directory that looks like the weight writer's output (contents are not a real model)."""
    d = root / model_id
    d.mkdir(parents=True)
    (d / "params_shard_0.bin").write_bytes(bytes(range(256)) * (shard_bytes // 256) + b"\x01" * (shard_bytes % 256))
    (d / "params_shard_1.bin").write_bytes(b"\x02" * 64)
    records = [
        {"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": shard_bytes, "records": []},
        {"dataPath": "params_shard_1.bin", "format": "raw-shard", "nbytes": 64, "records": []},
    ]
    (d / "tensor-cache.json").write_text(json.dumps({"metadata": {}, "records": records}))
    (d / "mlc-chat-config.json").write_text(json.dumps({"version": "0.1.0", "quantization": quant}))
    (d / "tokenizer.json").write_bytes((FIXTURES / "tokenizer.json").read_bytes())
    (d / "tokenizer_config.json").write_bytes((FIXTURES / "tokenizer_config.json").read_bytes())
    (d / "unrelated.txt").write_text("not part of the site")
    lib = root / f"{model_id}.wasm"
    lib.write_bytes(WASM)
    variant = Variant(id=model_id, quantization=quant, needs_shader_f16="f16" in quant, context_window_size=512)
    return SiteVariant(variant, d, lib)


def scripted_pipeline_js(decode_delay_ms: int = 0) -> str:
    """A JS class standing in for pipeline.js's model: it answers its script, a token per step, with logits over a
    400-token vocabulary (the fixture tokenizer's); ``decode_delay_ms`` lets a test catch a reply mid-stream."""
    delay = f"await new Promise((r) => setTimeout(r, {decode_delay_ms})); " if decode_delay_ms else ""
    return (
        """class ScriptedPipeline {
  constructor(script) { Object.assign(this, { script, step: 0, contextWindowSize: 256, prefillChunkSize: 16 }); }
  next() {
    const logits = new Float32Array(400).fill(-10);
    logits[this.script[Math.min(this.step++, this.script.length - 1)]] = 10;
    return logits;
  }
  reset() { this.step = 0; }
  async prefill() { return this.next(); }
"""
        + f"  async decode() {{ {delay}return this.next(); }}\n"
        + """  dispose() {}
}
"""
    )
