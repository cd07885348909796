"""Writes the tiny HF directories tests/build/arch/test_families_cuda.py checks the CUDA engine on, one folder per
variant, for a GPU machine that has no transformers of ours (scripts/make_gpu_carry.sh carries them; the test
reads them from $WEBBUILD_TINY_FAMILIES). Needs transformers (CPU torch).

Usage: .venv/bin/python scripts/make_tiny_families.py OUT_DIR"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from family_checks import DEVICE_VARIANTS, write_variant  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for name in DEVICE_VARIANTS:
        write_variant(out, name)


if __name__ == "__main__":
    main()
