"""Figures for BENCHMARKS.md: where a built site's bytes go, file by file, and inside its WebGPU model library
(wasm code, the WGSL kernels in its data, the rest of the data: TVM's VM bytecode and the runtime's constants),
for one or more sites side by side, against issue 10's figures (87.8 MiB for the q4f32_1 bundle, at most
96.6 MiB for the q4f32_m one).

    .venv/bin/python benchmarks/bundle_size.py SITE [SITE...] [--gzip]

Every file of a site lands on exactly one row (the rows add up to the folder); --gzip adds each site's size
once compressed with gzip -9, what a host that compresses sends.
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from webbuild.build.link import wasm_sections

MIB = 2**20
BEFORE_MIB = 87.8  # the whole q4f32_1 site, before issue 10
TARGET_MIB = BEFORE_MIB * 1.10
# How TVM's WebGPU codegen heads each kernel's WGSL source in the library's embedded module.
_KERNEL = re.compile(rb"//-{40}\n// Function: \w+\n//-{40}\n[\x09\x0a\x20-\x7e]*")
WGSL = "  data: WGSL kernels"  # rows starting with two spaces split the library's row


def row_of(rel: Path) -> str:
    """The row a site file is counted on: each model-folder file but the shards, each vendored package, the
    runtime's own modules together, the licences together, the page with its assets and the manifest."""
    if rel.parts[0] == "models":
        return "weights (params_shard_*)" if rel.name.startswith("params_shard_") else f"models/*/{rel.name}"
    if rel.parts[0] == "libs":
        return "library (*-webgpu.wasm)"
    if rel.parts[0] == "runtime":
        if rel.name.startswith(("LICENSE", "NOTICE")):
            return "runtime/vendor/ licences"
        return f"runtime/vendor/{rel.name}" if rel.parts[1] == "vendor" else "runtime/*.js (own modules)"
    return "page, assets, manifest.json"


def library_parts(path: Path) -> tuple[dict[str, int], int]:
    """A model library by wasm section, its data section split into the WGSL kernels and the rest; and how
    many kernels it holds."""
    data = path.read_bytes()
    parts: dict[str, int] = defaultdict(int)
    kernels = 0
    for section in wasm_sections(path):
        if section.name == "data":
            found = [m.end() - m.start() for m in _KERNEL.finditer(data, section.start, section.start + section.size)]
            kernels += len(found)
            parts[WGSL] += sum(found)
            parts["  data: VM bytecode, constants"] += section.size - sum(found)
        else:
            parts["  code" if section.name == "code" else "  other sections"] += section.size
    parts["  other sections"] += len(data) - sum(parts.values())  # section headers and the preamble
    return parts, kernels


@dataclass
class Site:
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kernels: int = 0
    gzipped: int = 0  # every file gzip -9, when asked

    @property
    def total(self) -> int:
        return sum(n for row, n in self.rows.items() if not row.startswith("  "))


def measure(site: Path, compress: bool) -> Site:
    out = Site()
    for f in sorted(p for p in site.rglob("*") if p.is_file()):
        rel = f.relative_to(site)
        out.rows[row_of(rel)] += f.stat().st_size
        if rel.parts[0] == "libs":
            parts, kernels = library_parts(f)
            out.kernels += kernels
            for part, n in parts.items():
                out.rows[part] += n
        if compress:
            out.gzipped += len(gzip.compress(f.read_bytes(), compresslevel=9))
    return out


def _order(row: str) -> tuple[int, str]:
    prefixes = ("weights", "models/", "library", "  ", "runtime/*", "runtime/vendor/", "page")
    return next(i for i, p in enumerate(prefixes) if row.startswith(p)), row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sites", nargs="+", type=Path)
    parser.add_argument("--gzip", action="store_true", help="also each site with every file gzip -9")
    args = parser.parse_args()
    sites = [measure(site, args.gzip) for site in args.sites]
    print("| part, MiB | " + " | ".join(str(s) for s in args.sites) + " |")
    print("|---|" + "---|" * len(sites))
    for row in sorted({r for s in sites for r in s.rows}, key=_order):
        label = f"&nbsp;&nbsp;{row.strip()}" if row.startswith("  ") else row
        cells = [f"{s.rows.get(row, 0) / MIB:.3f}" + (f" ({s.kernels})" if row == WGSL else "") for s in sites]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| **total** | " + " | ".join(f"**{s.total / MIB:.2f}**" for s in sites) + " |")
    print(
        f"| vs {BEFORE_MIB} MiB (target: at most +10 %, {TARGET_MIB:.1f} MiB) | "
        + " | ".join(f"{(s.total / MIB / BEFORE_MIB - 1) * 100:+.1f} %" for s in sites)
        + " |"
    )
    if args.gzip:
        print("| every file gzip -9 | " + " | ".join(f"{s.gzipped / MIB:.2f}" for s in sites) + " |")


if __name__ == "__main__":
    main()
