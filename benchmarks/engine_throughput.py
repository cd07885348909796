"""Python engine throughput at several concurrency levels (issue 3 figures), CPU or CUDA.

    .venv/bin/python benchmarks/engine_throughput.py SITE [--device cpu|cuda] [--concurrency 1,4,16]
        [--max-tokens 32] [--random-weights]

SITE is a folder written by `webbuild package`. With --random-weights the site's config and tokenizer are used
with random weights of the same shapes (same speed; for machines the real weights cannot be carried to).
Prints time to first token, decode tokens/s per request and aggregate tokens/s for each level.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from webbuild.build.prepare import parameter_specs
from webbuild.engine.engine import Engine, EngineConfig, load_prepared

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a compiler does.",
    "List three facts about Paris.",
    "How do plants make food?",
]


def random_weights(prepared) -> None:
    rng = np.random.default_rng(0)
    for name, (shape, dtype) in parameter_specs(prepared.cfg, prepared.scheme).items():
        if dtype == "uint32":
            prepared.params[name] = rng.integers(0, 2**32, size=shape, dtype=np.uint32)
        else:
            prepared.params[name] = (rng.standard_normal(shape) * 0.02).astype(dtype)


def one_request(engine: Engine, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first = None
    stream = engine.chat.completions.create(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            first = time.perf_counter()
        usage = chunk.get("usage")
    end = time.perf_counter()
    tokens = usage["completion_tokens"]
    ttft = (first or end) - t0
    decode = (tokens - 1) / (end - first) if first and tokens > 1 and end > first else 0.0
    return ttft, decode, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantization")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--random-weights", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    prepared = load_prepared(args.site, args.quantization, params=not args.random_weights)
    if args.random_weights:
        random_weights(prepared)
    t0 = time.perf_counter()
    engine = Engine(prepared, device=args.device, config=EngineConfig(mode="server", max_num_sequence=max(levels)))
    load_s = time.perf_counter() - t0
    one_request(engine, "warm up", 4)

    print(f"## {prepared.variant_id} on {args.device}{' (random weights)' if args.random_weights else ''}")
    print(f"engine load {load_s:.1f}s, max_tokens {args.max_tokens}, greedy\n")
    print("| concurrency | TTFT s (median) | decode tok/s per request (median) | aggregate tok/s |")
    print("|---|---|---|---|")
    for n in levels:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda p: one_request(engine, p, args.max_tokens), prompts))
        wall = time.perf_counter() - t0
        ttft = statistics.median(r[0] for r in results)
        decode = statistics.median(r[1] for r in results)
        total = sum(r[2] for r in results)
        print(f"| {n} | {ttft:.3f} | {decode:.2f} | {total / wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
