"""Multi-turn KV reuse (issue 12): time to first token of each chat turn with and without the prefix cache.

    .venv/bin/python benchmarks/prefix_cache.py [MODEL] [--device cpu|cuda] [--turns 4] [--max-tokens 48]
        [--repeat 3] [--out FILE]

MODEL is a preset, model spec or site (default: smollm2-135m-instruct). Two engines share the loaded model, one
with the prefix cache and one without (``EngineConfig(prefix_cache=False)``, as ``webbuild serve
--no-prefix-cache``); they run one after the other, never at once. Each repeat is a new conversation (its own
first question, so no repeat starts from an earlier one's cache): the cached engine's replies are sent back as the
assistant turns of both, so both prefill the same prompts. Prints, per turn, the prompt tokens, the tokens the
cache reused and the time to first token of both engines (medians over the chats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from webbuild.engine.engine import Engine, EngineConfig, load_prepared

FIRST = [
    "Write a short poem about the sea.",
    "Explain what a compiler does.",
    "List three facts about Paris.",
    "How do plants make food?",
    "What is a prime number?",
]
NEXT = ["Can you make it shorter?", "Now explain it to a child.", "Give one more example.", "Summarize that."]


def timed_turn(engine: Engine, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, str, dict[str, Any]]:
    """Time to the first streamed text, the reply, the usage."""
    t0 = time.perf_counter()
    first, parts, usage = None, [], {}
    stream = engine.chat.completions.create(
        messages=messages, max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk["choices"] and (text := chunk["choices"][0]["delta"].get("content")):
            first = first or time.perf_counter()
            parts.append(text)
        usage = chunk.get("usage") or usage
    return (first or time.perf_counter()) - t0, "".join(parts), usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantization")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    prepared = load_prepared(args.model, args.quantization)
    cached = Engine(prepared, device=args.device)
    plain = Engine(prepared, device=args.device, config=EngineConfig(prefix_cache=False))
    for engine in (cached, plain):
        timed_turn(engine, [{"role": "user", "content": "warm up"}], 4)

    rows: list[dict[str, Any]] = []  # per repeat and turn
    for repeat in range(args.repeat):
        messages: list[dict[str, str]] = []
        for turn in range(args.turns):
            question = FIRST[repeat % len(FIRST)] if turn == 0 else NEXT[(turn - 1) % len(NEXT)]
            messages.append({"role": "user", "content": question})
            with_s, reply, usage = timed_turn(cached, messages, args.max_tokens)
            without_s, plain_reply, _ = timed_turn(plain, messages, args.max_tokens)
            rows.append(
                {
                    "repeat": repeat,
                    "turn": turn + 1,
                    "prompt_tokens": usage["prompt_tokens"],
                    "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"],
                    "ttft_with_s": with_s,
                    "ttft_without_s": without_s,
                    "same_reply": reply == plain_reply,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            messages.append({"role": "assistant", "content": reply})

    print(f"\n## {prepared.variant_id} on {args.device}: max_tokens {args.max_tokens}, greedy, {args.repeat} chats\n")
    print("| turn | prompt tokens | reused from the cache | TTFT s with the prefix cache | TTFT s without | speed-up |")
    print("|---|---|---|---|---|---|")
    for turn in range(1, args.turns + 1):
        of_turn = [r for r in rows if r["turn"] == turn]
        with_s = statistics.median(r["ttft_with_s"] for r in of_turn)
        without_s = statistics.median(r["ttft_without_s"] for r in of_turn)
        prompt = statistics.median(r["prompt_tokens"] for r in of_turn)
        reused = statistics.median(r["cached_tokens"] for r in of_turn)
        print(f"| {turn} | {prompt:.0f} | {reused:.0f} | {with_s:.3f} | {without_s:.3f} | {without_s / with_s:.1f}x |")
    print(f"\nreplies identical with and without the cache: {sum(r['same_reply'] for r in rows)}/{len(rows)}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
