"""Build time and bundle size per family (issue 9): each family's tiny transformers model (tests/hf_tiny.py,
the models of tests/build/arch/test_families.py, context 128, prefill chunk 32) packaged with ``webbuild
package`` for WebGPU once per scheme. The figures of BENCHMARKS.md "Families: build time and bundle size".

Build times are cold: the model library is compiled and linked into an empty temporary WEBBUILD_CACHE. Only
TVM's wasm runtime objects come from the shared cache (built once per TVM/emcc version, whatever the family).

Usage: .venv/bin/python benchmarks/families.py [--families llama,qwen2,...] [--schemes q0f32,q4f32_1]
    > table.md"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from family_checks import CHUNK, CONTEXT  # noqa: E402
from hf_tiny import FAMILIES, write_hf_dir  # noqa: E402

from webbuild import _log  # noqa: E402
from webbuild.build.link import cached_runtime  # noqa: E402
from webbuild.commands.package import PackageOptions, package  # noqa: E402

KIB = 1024
PARTS = ("weights", "library", "runtime", "tokenizer", "other")


@dataclass
class StepClock(_log.Reporter):
    """Records when each reported step starts; a step lasts until the next one starts."""

    starts: list[tuple[str, float]] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.starts.append((message, time.monotonic()))

    def seconds(self, prefix: str, end: float) -> float:
        """How long the step whose message starts with ``prefix`` took (``end``: when the last step ended)."""
        times = [t for _, t in self.starts] + [end]
        (i,) = (i for i, (message, _) in enumerate(self.starts) if message.startswith(prefix))
        return times[i + 1] - times[i]


def part_of(rel: Path) -> str:
    """The bundle part a site file belongs to: weight shards, the model library, the browser runtime, the
    tokenizer files, or the rest (pages, manifest, tensor-cache index, chat config)."""
    if rel.name.startswith("params_shard_"):
        return "weights"
    if rel.parts[0] == "libs":
        return "library"
    if rel.parts[0] == "runtime":
        return "runtime"
    if rel.name.startswith("tokenizer"):
        return "tokenizer"
    return "other"


def sizes(site: Path) -> dict[str, int]:
    parts = dict.fromkeys(PARTS, 0)
    for f in site.rglob("*"):
        if f.is_file():
            parts[part_of(f.relative_to(site))] += f.stat().st_size
    return parts


def measure(hf_dir: Path, scheme: str, out: Path) -> str:
    """One table row: build the site (cold library) and report its times and parts."""
    clock = StepClock()
    with _log.reporting(clock):
        result = package(PackageOptions(str(hf_dir), out, [scheme], CONTEXT, CHUNK))
    end = time.monotonic()
    compile_s, link_s = clock.seconds("compiling", end), clock.seconds("linking", end)
    parts = sizes(result.site)
    cells = " | ".join(f"{parts[p] / KIB:,.0f}" for p in PARTS)
    return (
        f"| {hf_dir.name} | {scheme} | {compile_s:.0f} | {link_s:.0f} | {result.seconds:.0f} | {cells} | "
        f"{sum(parts.values()) / KIB:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--schemes", default="q0f32,q4f32_1")
    args = parser.parse_args()
    runtime = cached_runtime()
    print(
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start "
        "(a shared machine), seconds and KiB:\n\n"
        "| family | scheme | compile s | link s | package s | weights | library | runtime | tokenizer | other | total |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp, "cache")
        if runtime is not None:  # else the first build also builds the runtime objects: its link time shows it
            shutil.copytree(runtime, cache / "wasm-runtime" / runtime.name)
        os.environ["WEBBUILD_CACHE"] = str(cache)
        for family in args.families.split(","):
            hf_dir = write_hf_dir(Path(tmp, family), family, seed=1)
            for scheme in args.schemes.split(","):
                print(measure(hf_dir, scheme, Path(tmp, "sites", f"{family}-{scheme}")), flush=True)


if __name__ == "__main__":
    main()
