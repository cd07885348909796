"""Structured-output overhead per generated token in the browser runtime (issue 12 figure), in headless Chromium.

    .venv/bin/python benchmarks/structured_output_browser.py SITE [--requests 4] [--max-tokens 64]

SITE is a site folder (`webbuild package`). Runs the same greedy chat requests through the page's engine plain
and with a json_schema response_format (web-xgrammar's bitmask per token, applied to the logits on the GPU with
the library's apply_bitmask_inplace) and prints milliseconds per decoded token for each (the runtime's own decode
timing), their difference, and the first constrained request's extra wall time (xgrammar's wasm start, the
tokenizer read into it, the schema's compile).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from webbuild.commands.bench import site_page

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

# Runs `requests` requests; per request its wall seconds, decoded tokens and the runtime's decode tokens/s.
_RUN_JS = """async ([request, requests]) => {
  const engine = window.webbuildApp.engine;
  const out = [];
  for (let i = 0; i < requests; i++) {
    const t0 = performance.now();
    const r = await engine.chat.completions.create(request);
    out.push({ wall: (performance.now() - t0) / 1000, tokens: r.usage.completion_tokens,
               decode: r.usage.extra.decode_tokens_per_s, reason: r.choices[0].finish_reason });
  }
  return out;
}"""


def run(page, requests: int, request: dict) -> list[dict]:
    return page.evaluate(f"({_RUN_JS})({json.dumps([request, requests])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    plain = {"messages": PROMPT, "max_tokens": args.max_tokens, "temperature": 0}
    fmt = {"type": "json_schema", "json_schema": {"name": "engineer", "schema": SCHEMA}}
    constrained = plain | {"response_format": fmt}
    with site_page(args.site) as (page, _):
        adapter = page.evaluate("(async () => (await window.webbuildApp.engine.getModelInfo()).adapter)()")
        run(page, 1, plain | {"max_tokens": 4})  # warm-up
        first_plain = run(page, 1, plain)[0]
        first_json = run(page, 1, constrained)[0]  # xgrammar's first use
        figures = {name: run(page, args.requests, req) for name, req in (("plain", plain), ("json", constrained))}
    ms = {name: statistics.median(1000 / r["decode"] for r in rows) for name, rows in figures.items()}
    tokens = {name: rows[-1]["tokens"] for name, rows in figures.items()}
    print(f"site {args.site.name}; adapter {adapter.get('description') or adapter.get('vendor')}")
    print(f"greedy, {args.requests} requests of <= {args.max_tokens} tokens; decode ms per token (median)")
    print(f"plain        {ms['plain']:7.2f} ms/token ({tokens['plain']} tokens)")
    print(f"json_schema  {ms['json']:7.2f} ms/token ({tokens['json']} tokens, {figures['json'][-1]['reason']})")
    print(f"overhead     {ms['json'] - ms['plain']:+7.2f} ms/token ({(ms['json'] / ms['plain'] - 1) * 100:+.0f}%)")
    per_token_first = first_json["wall"] - first_json["tokens"] * ms["json"] / 1000
    per_token_plain = first_plain["wall"] - first_plain["tokens"] * ms["plain"] / 1000
    print(
        f"first constrained request's extra time (xgrammar start + compile): {per_token_first - per_token_plain:.2f} s"
    )


if __name__ == "__main__":
    main()
