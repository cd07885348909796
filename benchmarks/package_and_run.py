"""Figures for BENCHMARKS.md: SmolLM2 build time cold and warm, bundle size by part, and load time, time to
first token and tokens/s in headless Chromium beside the CPU engine — all in one run, on this machine.

    .venv/bin/python benchmarks/package_and_run.py [--model smollm2-135m-instruct] [--max-tokens 8]

"Cold" uses an empty cache (the runtime objects and model library are compiled; downloads are reused so
network speed stays out of it); "warm" runs again with that cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from webbuild.cache import cache_dir
from webbuild.commands.bench import bench_browser, bench_cpu
from webbuild.commands.package import size_by_part


def timed_package(model: str, out: Path, cache: Path) -> float:
    env = os.environ | {"WEBBUILD_CACHE": str(cache)}
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "webbuild.cli", "--quiet", "package", model, "-o", str(out)]
    subprocess.run(cmd, env=env, check=True)
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp, "cache")
        cache.mkdir()
        for reused in ("downloads", "extracted"):
            if cache_dir(reused).exists():
                shutil.copytree(cache_dir(reused), cache / reused)
        site = Path(tmp, "site")
        cold = timed_package(args.model, site, cache)
        warm = timed_package(args.model, site, cache)
        parts = size_by_part(site)
        os.environ["WEBBUILD_CACHE"] = str(cache)
        runs = [bench_cpu(site, max_tokens=args.max_tokens), bench_browser(site, max_tokens=args.max_tokens)]

    print(f"## {args.model} (q4f32_1), {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores\n")
    print("| build | seconds |\n|---|---|")
    print(f"| cold (empty cache) | {cold:.0f} |\n| warm (cached runtime + library) | {warm:.0f} |\n")
    print("| bundle part | MiB |\n|---|---|")
    for part, size in sorted(parts.items()):
        print(f"| {part} | {size / 2**20:.2f} |")
    print(f"| total | {sum(parts.values()) / 2**20:.2f} |\n")
    print("| engine | load s | prompt tokens | time to first token s | prefill tok/s | decode tok/s |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r.where} | {r.load_s:.1f} | {r.prompt_tokens} | {r.time_to_first_token_s:.2f} | "
            f"{r.prefill_tokens_per_s:.2f} | {r.decode_tokens_per_s:.3f} |"
        )


if __name__ == "__main__":
    main()
