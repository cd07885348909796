"""Fills a built site's weight shards with seeded random values in the same layout, so that a site can travel to
the GPU machine without its weights (scripts/make_gpu_browser_carry.sh with WEIGHTS=random) and be timed there.

The kernels decode weights without branches on their values, so speed does not depend on them; only the text
does. Each tensor gets values its layout can hold: random codes, small positive float16/float32 scales, negative
minimums, unit norms, so activations stay finite and the model talks random tokens rather than stopping at once.
tensor-cache.json's md5 and manifest.json's sha256 are rewritten for the new bytes (the browser and the engines
check them). numpy and the standard library only: it runs on the GPU machine before anything is installed there.

usage: python3 scripts/random_weights.py [--seed N] [--if-missing] SITE [SITE...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np

SCALE = (2e-3, 6e-3)  # a quantized group's scale: codes of 4 or 8 bits span about ±0.03 or ±0.5
MINIMUM = (-4.5e-2, -1.5e-2)  # a q4m group's minimum (about -7.5 scales: codes 0..15 centred on zero)
FLOAT_STD = 0.02  # unquantized matrices


def tensor_values(name: str, dtype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Random values for one tensor-cache record, as the dtype it is stored in."""
    n = math.prod(shape)
    kind = name.rsplit(".", 1)[-1]
    if dtype == "uint32" and kind in ("q_scale", "q_min"):  # float16 pairs in one word (quantize/halves.py)
        low, high = SCALE if kind == "q_scale" else MINIMUM
        return rng.uniform(low, high, 2 * n).astype("<f2").view("<u4")
    if dtype in ("uint32", "int32", "uint8", "int8"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    if kind == "q_scale":
        return rng.uniform(*SCALE, n).astype(dtype)
    if "norm" in name:
        return np.ones(n, dtype=dtype)
    return (rng.standard_normal(n) * FLOAT_STD).astype(dtype)


def fill_model(model_dir: Path, rng: np.random.Generator) -> dict[str, str]:
    """Rewrites every shard of one tensor cache; returns {file name: sha256} of what it wrote (json included)."""
    index_path = model_dir / "tensor-cache.json"
    index = json.loads(index_path.read_text())
    digests = {}
    for shard in index["records"]:
        data = np.zeros(int(shard["nbytes"]), dtype=np.uint8)
        for rec in shard["records"]:
            if rec.get("format", "raw") == "f32-to-bf16":  # bfloat16: the top half of each float32
                values = tensor_values(rec["name"], "float32", rec["shape"], rng).view("<u4") >> 16
                values = values.astype("<u2")
            else:
                values = tensor_values(rec["name"], rec["dtype"], rec["shape"], rng)
            raw = values.view(np.uint8)
            start = int(rec["byteOffset"])
            if raw.size != int(rec["nbytes"]):
                raise SystemExit(f"{index_path}: {rec['name']} holds {rec['nbytes']} bytes, not {raw.size}")
            data[start : start + raw.size] = raw
        (model_dir / shard["dataPath"]).write_bytes(data.tobytes())
        shard["md5sum"] = hashlib.md5(data).hexdigest()
        digests[shard["dataPath"]] = hashlib.sha256(data).hexdigest()
    index_path.write_text(json.dumps(index, indent=2))
    digests[index_path.name] = hashlib.sha256(index_path.read_bytes()).hexdigest()
    return digests


def fill_site(site: Path, seed: int, if_missing: bool) -> bool:
    """Every variant of ``site``; with ``if_missing``, only if some shard is absent. True if it wrote."""
    manifest_path = site / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    model_dirs = [site / "models" / v["id"] for v in manifest["variants"]]
    shards = [
        d / s["dataPath"] for d in model_dirs for s in json.loads((d / "tensor-cache.json").read_text())["records"]
    ]
    if if_missing and all(p.is_file() for p in shards):
        return False
    rng = np.random.default_rng(seed)
    for variant, model_dir in zip(manifest["variants"], model_dirs, strict=True):
        digests = fill_model(model_dir, rng)
        prefix = f"models/{variant['id']}/"
        for record in variant["files"]:
            name = record["path"].removeprefix(prefix)
            if name in digests:
                record["sha256"] = digests[name]
                record["bytes"] = (model_dir / name).stat().st_size
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sites", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--if-missing", action="store_true", help="leave sites whose shards are all there")
    args = parser.parse_args()
    for site in args.sites:
        if fill_site(site, args.seed, args.if_missing):
            print(f"{site}: random weights (seed {args.seed})")


if __name__ == "__main__":
    main()
