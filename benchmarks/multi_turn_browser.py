"""Figures for BENCHMARKS.md, "Multi-turn KV reuse in the browser (issue 12)": time to first token of a chat's
later turns in headless Chromium, with the previous turn's KV cache reused (the runtime's default) and from an
emptied cache (resetChat() just before the same request); greedy, medians of repeated conversations.

    .venv/bin/python benchmarks/multi_turn_browser.py SITE [--repeat 1] [--max-tokens 4]

SITE is a `webbuild package` output (e.g. smollm2-135m-instruct). Chromium's adapter is what webbuild.browser
picks here (SwiftShader without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from webbuild.commands.bench import site_page
from webbuild.verify.report import adapter_name

SYSTEM = "You are a helpful assistant."
QUESTIONS = [
    "We will spend a week on the coast of Portugal in September. We like surfing, seafood and old towns. "
    "Which towns should we stay in?",
    "Which of them is best for beginners at surfing?",
]

# One turn: the request on the cache as the previous turn left it; with `cold`, again after resetChat().
_TURN_JS = """(async ([messages, request, cold]) => {
  const engine = window.webbuildApp.engine;
  const run = async () => {
    const res = await engine.chat.completions.create({ messages, ...request });
    return { usage: res.usage, message: res.choices[0].message };
  };
  const warm = await run();
  if (!cold) return { warm };
  await engine.resetChat();
  return { warm, cold: await run() };
})"""


def conversation(page: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The questions in turn, each answered on the warm cache and (from turn 2) on an emptied one; the warm
    reply goes into the history. One page call per turn: a turn on SwiftShader can take minutes."""
    page.evaluate("window.webbuildApp.engine.resetChat()")
    messages = [{"role": "system", "content": SYSTEM}]
    turns = []
    for i, question in enumerate(QUESTIONS):
        messages.append({"role": "user", "content": question})
        turn = page.evaluate(f"{_TURN_JS}({json.dumps([messages, request, i > 0])})")
        messages.append(turn["warm"]["message"])
        turns.append(turn)
    return turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()

    request = {"max_tokens": args.max_tokens, "temperature": 0}
    with site_page(args.site) as (page, load_s):
        runs = [conversation(page, request) for _ in range(args.repeat)]
        adapter = page.evaluate("window.webbuildApp.engine.getModelInfo()")["adapter"]
    manifest = json.loads((args.site / "manifest.json").read_text())
    print(f"## {manifest['default_variant']} in Chromium ({adapter_name(adapter or {})})")
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, model load {load_s:.1f}s, greedy,")
    print(f"max_tokens {args.max_tokens}, medians of {args.repeat} conversation(s)\n")
    print("| turn | prompt tokens | cached | prefilled | TTFT reused s | TTFT cold s | cold / reused | same reply |")
    print("|---|---|---|---|---|---|---|---|")
    for t in range(1, len(QUESTIONS)):
        turns = [run[t] for run in runs]
        warm = statistics.median(x["warm"]["usage"]["extra"]["time_to_first_token_s"] for x in turns)
        cold = statistics.median(x["cold"]["usage"]["extra"]["time_to_first_token_s"] for x in turns)
        usage = turns[0]["warm"]["usage"]
        same = all(x["warm"]["message"] == x["cold"]["message"] for x in turns)
        print(
            f"| {t + 1} | {usage['prompt_tokens']} | {usage['prompt_tokens_details']['cached_tokens']} "
            f"| {usage['extra']['prefill_tokens']} | {warm:.2f} | {cold:.2f} | {cold / warm:.1f}x "
            f"| {'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
