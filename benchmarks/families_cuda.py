"""Every family's tiny model on the CUDA engine against the CPU engine on the same weights (issue 9): the largest
relative logit difference over every position of 128 teacher-forced tokens (4+ prefill chunks), top-1 agreement
and greedy agreement, per quantization. The figures of BENCHMARKS.md "Families on CUDA (issue 9)"; the same
comparison tests/build/arch/test_families_cuda.py asserts. Run on a GPU machine through
``bash scripts/gpu_machine.sh families`` (the tiny models from scripts/make_tiny_families.py).

Usage: python3 benchmarks/families_cuda.py TINY_DIRS [--jobs N] [--out FILE.md]"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from family_checks import DEVICE_TOLERANCE, DEVICE_VARIANTS, device_agreement  # noqa: E402


def measure(hf_dir: Path, scheme: str) -> str:
    """One table row; a failure becomes its error text (the compile and kernel errors this run looks for)."""
    start = time.perf_counter()
    try:
        a = device_agreement(hf_dir, scheme)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
        last = traceback.format_exception_only(exc)[-1].strip().replace("|", "/").replace("\n", " ")
        return f"| {hf_dir.name} | {scheme} | | | | | | FAILED: {last[:300]} |"
    ok = a.rel_max <= DEVICE_TOLERANCE[scheme] and a.top1 == 1.0 and a.greedy_same == a.greedy_of
    return (
        f"| {a.variant} | {a.scheme} | {a.sliding_window or '-'} | {a.chunks} | {a.rel_max:.2e} | "
        f"{100 * a.top1:.1f} % | {a.greedy_same}/{a.greedy_of} | {'ok' if ok else 'OUT OF TOLERANCE'} "
        f"({time.perf_counter() - start:.0f} s) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiny_dirs", type=Path, help="scripts/make_tiny_families.py's output")
    parser.add_argument("--jobs", type=int, default=8, help="processes (each compiles its CPU and CUDA libraries)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    runs = [(args.tiny_dirs / v, s) for v in DEVICE_VARIANTS for s in sorted(DEVICE_TOLERANCE)]
    # spawn: a forked child would inherit TVM and CUDA state
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(measure, *zip(*runs, strict=True)))
    table = "\n".join(
        [
            "| model | scheme | window | prefill chunks | max rel. logit diff | top-1 agree | greedy agree | result |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
