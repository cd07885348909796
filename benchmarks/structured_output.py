"""Structured-output overhead per generated token on the Python engine (issue 12 figure), CPU or CUDA.

    .venv/bin/python benchmarks/structured_output.py [MODEL] [--device cpu] [--requests 4] [--max-tokens 64]

MODEL is a preset, bundle or HF directory (default smollm2-135m-instruct). Runs the same greedy requests plain
and with a json_schema response_format (grammar-constrained: a bitmask per token from xgrammar applied to the
logits) and prints milliseconds per generated token for each, their difference, and the grammar's compile time.
"""

from __future__ import annotations

import argparse
import statistics
import time

from webbuild.engine.engine import Engine

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "skills": {"type": "array", "items": {"type": "string"}},
        "level": {"enum": ["junior", "senior"]},
    },
    "required": ["name", "age", "skills", "level"],
}
PROMPT = [{"role": "user", "content": "Describe a made-up software engineer as JSON with name, age, skills, level."}]


def ms_per_token(engine: Engine, requests: int, max_tokens: int, **extra) -> tuple[float, int]:
    """Median over requests of wall time after the first token per later token, and the tokens of the last."""
    per_token, tokens = [], 0
    for _ in range(requests):
        out = engine.chat.completions.create(messages=PROMPT, max_tokens=max_tokens, temperature=0, **extra)
        usage = out["usage"]
        tokens = usage["completion_tokens"]
        per_token.append(1000 / usage["extra"]["decode_tokens_per_s"])
    return statistics.median(per_token), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    engine = Engine(args.model, device=args.device)
    fmt = {"type": "json_schema", "json_schema": {"name": "engineer", "schema": SCHEMA}}
    t0 = time.perf_counter()
    engine.grammars.response_format({"type": "json_schema", "schema": SCHEMA})  # tokenizer facts + compile
    compile_s = time.perf_counter() - t0
    ms_per_token(engine, 1, 4)  # warm-up
    plain, plain_tokens = ms_per_token(engine, args.requests, args.max_tokens)
    constrained, json_tokens = ms_per_token(engine, args.requests, args.max_tokens, response_format=fmt)
    print(
        f"model {engine.model_name} on {args.device}; greedy, {args.requests} requests of <= {args.max_tokens} tokens"
    )
    print(f"plain        {plain:7.2f} ms/token ({plain_tokens} tokens)")
    print(f"json_schema  {constrained:7.2f} ms/token ({json_tokens} tokens)")
    print(f"overhead     {constrained - plain:+7.2f} ms/token ({(constrained / plain - 1) * 100:+.0f}%)")
    print(f"first grammar of the engine (tokenizer info + compile): {compile_s:.2f} s")


if __name__ == "__main__":
    main()
