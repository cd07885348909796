"""Figures for BENCHMARKS.md (issue 10): how far each quantization of a model is from its source, what its
weights cost, and how fast the CPU engine decodes it; with --baseline, an older checkout beside it in one run.

    .venv/bin/python benchmarks/quantization.py [--model smollm2-135m-instruct] [--schemes q4f32_1,q4f32_m]
        [--baseline DIR] [--baseline-schemes q4f32_1] [--as-safetensors] [--tokens 16] [--decode-tokens 32]
        [--rounds 3]

A scheme may name an embedding layout after a colon (``q4f32_m:q4m``), as ``webbuild package --embeddings``.

Each row builds the CPU (llvm) engine of one scheme and does what `webbuild verify --reference cpu,hf` does for
its cpu/hf pair, without the browser: the engine's greedy continuation of each built-in prompt (--tokens), the
prompt plus continuation scored by the engine and by transformers on the source's float32 weights (a GGUF's
dequantized values), compared position by position: top-1 agreement, mean KL(source || engine), and the prompts
whose whole continuation is what the source picks too. Then the weights as written to a tensor cache, and decode
speed: a chat prompt, prefill then --decode-tokens greedy tokens, best of three; the rows take turns --rounds
times (each a fresh process, the library cached) and the best round counts, as a busy machine only slows a run.

--baseline DIR (a checkout unpacked with `git archive REV | tar -x -C DIR`) runs its --baseline-schemes in a
child process with DIR first on the path: the "before" rows of the same run. --as-safetensors first writes the
source's float32 weights as a Hugging Face folder and quantizes from that: an unquantized source.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHAT_PROMPT = "Write a short poem about the sea, in four lines."


def worker(model: str, scheme: str, tokens: int, decode_tokens: int, out: Path) -> None:
    """One row, run by whichever webbuild the path holds: logits of every prompt (when ``tokens`` > 0), weight
    bytes, speed."""
    from tokenizers import Tokenizer

    from webbuild.build.prepare import prepare_model, write_model_files
    from webbuild.build.source import load_source
    from webbuild.commands.verify import _encode  # the encoding `webbuild verify` uses
    from webbuild.engine.engine import Engine, EngineConfig
    from webbuild.verify.prompts import BUILTIN_PROMPTS, VerifyPrompt

    name, _, embeddings = scheme.partition(":")  # "q4f32_m:q4m": the scheme with --embeddings q4m
    override = {"embeddings": embeddings} if embeddings else {}  # a baseline checkout may predate the option
    prepared = prepare_model(load_source(model), name, **override)
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_model_files(prepared, Path(tmp))
        weight_bytes = sum(f.bytes for f in summary.files if f.path.startswith("params_shard_"))
    engine = Engine(prepared, config=EngineConfig(mode="interactive"))
    tokenizer = Tokenizer.from_str(prepared.tokenizer_json)
    arrays: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(BUILTIN_PROMPTS if tokens else ()):
        ids = _encode(prepared, tokenizer, prompt, tokens)
        continuation, _ = engine.greedy(ids, tokens)
        seq = ids + continuation
        arrays[f"seq{i}"], arrays[f"len{i}"] = np.array(seq), np.array(len(ids))
        arrays[f"logits{i}"] = engine.score_positions(seq)
    chat = _encode(prepared, tokenizer, VerifyPrompt("speed", CHAT_PROMPT), 0)  # the text alone for a base model
    prefill = decode = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        engine.greedy(chat, 1)  # prefill only
        t1 = time.perf_counter()
        engine.greedy(chat, decode_tokens + 1)
        t2 = time.perf_counter()
        prefill, decode = min(prefill, t1 - t0), min(decode, (t2 - t1) - (t1 - t0))
    report = prepared.quant_report.lines() if getattr(prepared, "quant_report", None) else []
    facts = {
        "scheme": scheme,
        "weight_bytes": weight_bytes,
        "bits_per_param": summary.bits_per_param,
        "prompt_tokens": len(chat),
        "prefill_tok_s": len(chat) / prefill,
        "decode_tok_s": decode_tokens / decode,
        "report": report,
    }
    np.savez(out, facts=json.dumps(facts), prompts=len(BUILTIN_PROMPTS) if tokens else 0, **arrays)


def _run_row(model: str, scheme: str, tokens: int, args: argparse.Namespace, tmp: Path, path: Path | None) -> Path:
    out = tmp / f"{'base' if path else 'this'}-{scheme}-{tokens}.npz"
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--worker", model, scheme, str(tokens), str(args.decode_tokens), str(out)]
    subprocess.run(cmd, env=env, check=True, cwd=tmp)
    return out


def _as_safetensors(model: str, folder: Path) -> str:
    """The source's float32 weights, config and tokenizer as a Hugging Face folder."""
    from safetensors.numpy import save_file

    from webbuild.build.source import load_source

    source = load_source(model)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(source.config))
    (folder / "tokenizer.json").write_text(source.tokenizer_json)
    (folder / "tokenizer_config.json").write_text(json.dumps(source.tokenizer_config))
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in source.tensors.items()}, folder / "model.safetensors"
    )
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--schemes", default="q4f32_1,q4f32_m")
    parser.add_argument("--baseline", type=Path, help="an older checkout: its rows run with it first on the path")
    parser.add_argument("--baseline-schemes", default="q4f32_1")
    parser.add_argument("--as-safetensors", action="store_true", help="quantize from the source's float32 values")
    parser.add_argument("--tokens", type=int, default=16, help="greedy continuation per prompt, as verify --tokens")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="speed runs per row, taking turns")
    args = parser.parse_args()

    from webbuild.build.source import load_source
    from webbuild.verify.metrics import compare, summarize
    from webbuild.verify.references import HFScorer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = _as_safetensors(args.model, tmp / "hf") if args.as_safetensors else args.model
        plan = [("before", s, args.baseline) for s in args.baseline_schemes.split(",")] if args.baseline else []
        plan += [("after", s, None) for s in args.schemes.split(",")]
        rows = [(code, scheme, _run_row(model, scheme, args.tokens, args, tmp, path)) for code, scheme, path in plan]
        speed: dict[tuple[str, str], list[dict]] = {(code, scheme): [] for code, scheme, _ in plan}
        for _ in range(args.rounds - 1):
            for code, scheme, path in plan:
                again = _run_row(model, scheme, 0, args, tmp, path)
                speed[(code, scheme)].append(json.loads(str(np.load(again)["facts"])))
        hf = HFScorer(load_source(model))
        print(
            f"## {args.model}{' (as float32 safetensors)' if args.as_safetensors else ''}, cpu vs hf, "
            f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores\n"
        )
        print(
            "| code | scheme | weights MiB | bits/param | positions | top-1 | mean KL | identical greedy "
            "continuations | greedy tokens | prefill tok/s | decode tok/s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        reports = []
        for code, scheme, path in rows:
            data = np.load(path)
            facts = json.loads(str(data["facts"]))
            rounds = [facts, *speed[(code, scheme)]]
            prefill, decode = max(r["prefill_tok_s"] for r in rounds), max(r["decode_tok_s"] for r in rounds)
            metrics = []
            for i in range(int(data["prompts"])):
                seq, prompt_len = [int(t) for t in data[f"seq{i}"]], int(data[f"len{i}"])
                metrics.append(compare(hf.score(seq), data[f"logits{i}"], prompt_len=prompt_len))
            s = summarize(metrics)
            whole = sum(m.greedy == m.greedy_of for m in metrics)
            print(
                f"| {code} | {scheme} | {facts['weight_bytes'] / 2**20:.2f} | {facts['bits_per_param']:.2f} | "
                f"{s.positions} | {s.top1_pct:.1f} % | {s.kl_mean:.2e} | {whole}/{len(metrics)} | "
                f"{s.greedy}/{s.greedy_of} | {prefill:.1f} | {decode:.2f} |"
            )
            reports.append((code, scheme, facts["report"]))
        for code, scheme, lines in reports:
            if lines:
                print(f"\n{code} {scheme}: " + "; ".join(" ".join(line.split()) for line in lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        model, scheme, tokens, decode_tokens, out = sys.argv[2:]
        worker(model, scheme, int(tokens), int(decode_tokens), Path(out))
    else:
        main()
