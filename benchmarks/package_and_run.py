"""Figures for BENCHMARKS.md: a model's site built once per quantization scheme, side by side in one run: bundle
size by part (weights by kind of tensor), the GGUF's own bytes for those tensors, and load time, time to first
token and tokens/s in headless Chromium beside the CPU engine.

    .venv/bin/python benchmarks/package_and_run.py [--model smollm2-135m-instruct] [--schemes q4f32_1,q4f32_m]
        [--max-tokens 8] [--repeat 1] [--rounds 1] [--cold]

Each scheme is its own site (`webbuild package MODEL -q SCHEME`, warm: the shared cache). Speed: per round, every
site takes its turn (CPU engine, then the browser: a warm-up request and --repeat timed ones, medians); the
best round counts, as a busy machine only slows a run. --cold first times one build with an empty cache (the
runtime objects and model library compiled; downloads reused so network speed stays out of it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from webbuild.cache import cache_dir
from webbuild.commands.bench import BenchOptions, RunFigures, bench_browser, bench_engine
from webbuild.commands.package import size_by_part

MIB = 2**20


def timed_package(model: str, scheme: str, out: Path, cache: Path | None = None) -> float:
    env = os.environ | ({"WEBBUILD_CACHE": str(cache)} if cache else {})
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "webbuild.cli", "--quiet", "package", model, "-q", scheme, "-o", str(out)]
    subprocess.run(cmd, env=env, check=True)
    return time.monotonic() - t0


def tensor_kind(name: str) -> str:
    """``model.layers.3.mlp.down_proj.q_min`` -> ``linear q_min``; the embedding and norms by their role."""
    field = name.rsplit(".", 1)[-1]
    if "embed_tokens" in name or "lm_head" in name:
        return f"embedding/head {field}"
    if "norm" in name:
        return "norms"
    return f"linear {field}"


def weights_by_kind(site: Path) -> dict[str, int]:
    (index,) = site.glob("models/*/tensor-cache.json")
    kinds: dict[str, int] = {}
    for shard in json.loads(index.read_text())["records"]:
        for record in shard["records"]:
            kind = tensor_kind(record["name"])
            kinds[kind] = kinds.get(kind, 0) + record["nbytes"]
    return kinds


def gguf_bytes_by_kind(model: str) -> dict[str, tuple[str, int]]:
    """What the source GGUF itself spends on each kind of tensor: {kind: (GGUF types, bytes)}."""
    import gguf

    from webbuild.build.presets import fetch_weights, load_preset

    reader = gguf.GGUFReader(model if model.endswith(".gguf") else fetch_weights(load_preset(model)))
    kinds: dict[str, tuple[set[str], int]] = {}
    for tensor in reader.tensors:
        kind = "embedding/head" if tensor.name.startswith(("token_embd", "output.")) else "linear"
        kind = "norms" if "norm" in tensor.name else kind
        types, size = kinds.get(kind, (set(), 0))
        kinds[kind] = (types | {tensor.tensor_type.name}, size + int(tensor.n_bytes))
    return {kind: ("+".join(sorted(types)), size) for kind, (types, size) in kinds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--schemes", default="q4f32_1,q4f32_m")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="timed requests per engine after a warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="speed runs per site, taking turns")
    parser.add_argument("--cold", action="store_true", help="also time a build with an empty cache")
    args = parser.parse_args()
    schemes = args.schemes.split(",")
    options = BenchOptions(max_tokens=args.max_tokens, repeat=args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        builds: dict[str, float] = {}
        if args.cold:
            cache = Path(tmp, "cache")
            for reused in ("downloads", "extracted"):
                if cache_dir(reused).exists():
                    shutil.copytree(cache_dir(reused), cache / reused)
            builds["cold (empty cache)"] = timed_package(args.model, schemes[0], Path(tmp, "cold"), cache)
        sites = {scheme: Path(tmp, scheme) for scheme in schemes}
        for scheme, site in sites.items():
            builds[f"warm {scheme} (cached runtime)"] = timed_package(args.model, scheme, site)
        parts = {scheme: size_by_part(site) for scheme, site in sites.items()}
        kinds = {scheme: weights_by_kind(site) for scheme, site in sites.items()}
        best: dict[tuple[str, str], RunFigures] = {}
        for _ in range(args.rounds):
            for scheme, site in sites.items():
                for run in (bench_engine(site, "cpu", options), bench_browser(site, options)):
                    where = run.where.split(" (")[0]
                    kept = best.get((scheme, where))
                    if kept is None or run.decode_tokens_per_s > kept.decode_tokens_per_s:
                        best[(scheme, where)] = run

    print(f"## {args.model}: {', '.join(schemes)}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores\n")
    print("| build | seconds |\n|---|---|")
    for what, seconds in builds.items():
        print(f"| {what} | {seconds:.0f} |")
    header = " | ".join(schemes)
    print(f"\n| bundle part, MiB | {header} |\n|---|{'---|' * len(schemes)}")
    for part in sorted({p for sizes in parts.values() for p in sizes}):
        print(f"| {part} | " + " | ".join(f"{parts[s].get(part, 0) / MIB:.2f}" for s in schemes) + " |")
    print("| total | " + " | ".join(f"{sum(parts[s].values()) / MIB:.2f}" for s in schemes) + " |")
    print(f"\n| weights by tensor, MiB | {header} |\n|---|{'---|' * len(schemes)}")
    for kind in sorted({k for sizes in kinds.values() for k in sizes}):
        print(f"| {kind} | " + " | ".join(f"{kinds[s].get(kind, 0) / MIB:.2f}" for s in schemes) + " |")
    if not Path(args.model).is_dir():  # a preset or a .gguf file
        print("\n| the source GGUF's tensors | types | MiB |\n|---|---|---|")
        for kind, (types, size) in sorted(gguf_bytes_by_kind(args.model).items()):
            print(f"| {kind} | {types} | {size / MIB:.2f} |")
    print("\n| scheme | engine | load s | prompt tokens | time to first token s | prefill tok/s | decode tok/s |")
    print("|---|---|---|---|---|---|---|")
    for (scheme, _), r in sorted(best.items()):
        print(
            f"| {scheme} | {r.where} | {r.load_s:.1f} | {r.prompt_tokens} | {r.time_to_first_token_s:.2f} | "
            f"{r.prefill_tokens_per_s:.2f} | {r.decode_tokens_per_s:.3f} |"
        )


if __name__ == "__main__":
    main()
