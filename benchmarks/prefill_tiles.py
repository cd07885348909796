"""Issue 8 (time to first token): WebGPU prefill tilings side by side, as copies of one built site that differ
only in their model library.

    .venv/bin/python benchmarks/prefill_tiles.py SITE [--out DIR] [--variants shipped,dlight,m2k32,...]

SITE is a `webbuild package` site (dist/smollm2-135m-instruct). A variant is the config of dlight's Matmul that
schedules the linear layers over many tokens (prefill chunks) for WebGPU, written as

  shipped   what compile.py's _LinearMatmul picks
  dlight    dlight's default (tiles of 32 tokens x 32 outputs, 8 of the reduction a step)
  KEY=N,... fields of dlight's Matmul.Config with short keys: bx/by (threads along tokens/outputs), mx/my (per
            thread), k (reduction per step); e.g. mx2k16 = micro_size_x 2, micro_size_k 16

Each compiles into its own cache, DIR/cache/<variant> (TVM's web runtime objects, which no schedule changes, are
linked in from the usual cache), and becomes DIR/<site>-<variant>/ (weight shards hard-linked). Then on the GPU
machine, per site, the 37-token chat prompt and a long one:

    bash scripts/gpu_browser.sh bench <site>-<variant> --max-tokens 8 --repeat 5 --profile
    bash scripts/gpu_browser.sh bench <site>-<variant> --max-tokens 8 --repeat 3 --profile \\
        --prompt "$(python3 -c 'print("Tell me about the sea. " * 60)')"
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
from pathlib import Path
from unittest import mock

from tvm.s_tir import dlight as dl
from tvm.target import Target

from webbuild.build import compile as compile_mod
from webbuild.build.download import sha256_file
from webbuild.build.library import build_library
from webbuild.build.prepare import PreparedModel, read_model_files
from webbuild.cache import cache_root
from webbuild.site_format.manifest import FileRecord, read_manifest, write_manifest

DEFAULT_VARIANTS = "shipped,dlight,k16,mx2k32,m2k16"
_FIELDS = {
    "bx": "block_size_x",
    "by": "block_size_y",
    "mx": "micro_size_x",
    "my": "micro_size_y",
    "m": ("micro_size_x", "micro_size_y"),
    "k": "micro_size_k",
}
_PART = re.compile(r"(bx|by|mx|my|m|k)(\d+)")


def config_for(variant: str) -> dl.gpu.Matmul.Config | None:
    """The Matmul config a variant names; None keeps what compile.py ships."""
    if variant == "shipped":
        return None
    if variant == "dlight":
        return dl.gpu.Matmul.Config()
    parts = _PART.findall(variant)
    if not parts or "".join(key + value for key, value in parts) != variant:
        raise SystemExit(f"unknown variant {variant!r}: shipped, dlight, or keys bx/by/mx/my/m/k with sizes")
    fields: dict[str, int] = {}
    for key, value in parts:
        names = _FIELDS[key]
        for name in names if isinstance(names, tuple) else (names,):
            fields[name] = int(value)
    return dl.gpu.Matmul.Config(**fields)


def build_variant(model: PreparedModel, variant: str, cache: Path) -> Path:
    """The model's WebGPU library with ``variant``'s Matmul config, compiled into ``cache``."""
    runtime = cache_root() / "wasm-runtime"
    cache.mkdir(parents=True, exist_ok=True)
    if runtime.is_dir() and not (cache / "wasm-runtime").exists():
        (cache / "wasm-runtime").symlink_to(runtime.resolve())
    config = config_for(variant)
    rule = compile_mod._LinearMatmul
    shipped = rule.get_configs

    def get_configs(self: compile_mod._LinearMatmul, target: Target) -> dl.gpu.Matmul.Config:
        return config if config is not None and target.kind.name == "webgpu" else shipped(self, target)

    with (
        mock.patch.dict(os.environ, {"WEBBUILD_CACHE": str(cache)}),
        mock.patch.object(rule, "get_configs", get_configs),
    ):
        return build_library(model.cfg, model.scheme, "webgpu")


def _copy_or_link(src: str, dst: str) -> None:
    """Weight shards hard-linked (read-only everywhere); every other file a copy, as it may be rewritten."""
    if Path(src).name.startswith("params_shard_"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def variant_site(site: Path, library: Path, dest: Path) -> Path:
    """A copy of ``site`` at ``dest`` whose default variant's library is ``library``."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(site, dest, copy_function=_copy_or_link)
    manifest = read_manifest(dest)
    default = manifest.variant()
    lib = dest / default.model_lib
    shutil.copyfile(library, lib)
    record = FileRecord(default.model_lib, lib.stat().st_size, sha256_file(lib))
    files = [record if f.path == default.model_lib else f for f in default.files]
    variants = [dataclasses.replace(v, files=files) if v.id == default.id else v for v in manifest.variants]
    write_manifest(dest, dataclasses.replace(manifest, variants=variants))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="a built site, e.g. dist/smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=Path("dist/prefill-tiles"), help="where the sites go")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated (default {DEFAULT_VARIANTS})")
    args = parser.parse_args()
    variants = args.variants.split(",")
    for variant in variants:
        config_for(variant)  # a typo fails before minutes of compiling
    default = read_manifest(args.site).variant()
    model = read_model_files(args.site / default.model_url, default.id, params=False)
    made = []
    for variant in variants:
        print(f"* {variant}: compiling {default.id} for webgpu", file=sys.stderr, flush=True)
        library = build_variant(model, variant, args.out.resolve() / "cache" / variant)
        made.append(variant_site(args.site, library, args.out / f"{args.site.name}-{variant}"))
    print("sites:", *made, sep="\n  ")
    print("carry:  WEIGHTS=random bash scripts/make_gpu_browser_carry.sh", *made)


if __name__ == "__main__":
    main()
