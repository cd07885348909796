"""The browser runtime (web_runtime/) on a real tiny site in headless Chromium (SwiftShader): a chat's second
turn reuses the first turn's KV cache, prefilling only its new tokens, and replies as from an empty cache;
decode steps replayed from a recording (step_tape.js) give the CPU engine's logits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_llama import package_tiny_site

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_tiny_site(tmp_path_factory.mktemp("multi-turn"), seed=5)


@pytest.fixture(scope="module")
def tab(tiny_site: Path) -> Iterator[Any]:
    from webbuild.commands.bench import site_page

    with site_page(tiny_site) as (tab, _):
        yield tab


# Turn 1, then turn 2 (turn 1, its reply, a new message) on the warm cache, then turn 2 again from an emptied
# cache (resetChat), through the page's engine (the Web Worker proxy).
_TURNS_JS = """(async ([turn1, question, sampling]) => {
  const engine = window.webbuildApp.engine;
  await engine.resetChat();
  const first = await engine.chat.completions.create({ messages: turn1, ...sampling });
  const messages = [...turn1, first.choices[0].message, { role: "user", content: question }];
  const warm = await engine.chat.completions.create({ messages, ...sampling });
  const warmStats = await engine.runtimeStats();
  await engine.resetChat();
  const cold = await engine.chat.completions.create({ messages, ...sampling });
  return { first: first.usage, warm, warmStats, cold, message: await engine.getMessage() };
})"""


SAMPLINGS = {"greedy": {"temperature": 0}, "n2": {"temperature": 0.8, "seed": 3, "n": 2}}


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
def test_second_turn_prefills_only_its_new_tokens_with_the_cold_reply(tab: Any, sampling: dict[str, Any]) -> None:
    turn1 = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "the cat sat on the"}]
    args = [turn1, "and then the dog ran", {"max_tokens": 12} | sampling]
    out = tab.evaluate(f"{_TURNS_JS}({json.dumps(args)})")
    warm, cold = out["warm"], out["cold"]
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= out["first"]["prompt_tokens"], out
    assert out["warmStats"]["prefill_tokens"] == warm["usage"]["prompt_tokens"] - cached
    assert out["warmStats"]["cached_tokens"] == cached
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm["usage"]["completion_tokens"] >= 3
    assert [c["message"]["content"] for c in warm["choices"]] == [c["message"]["content"] for c in cold["choices"]]
    assert warm["usage"]["completion_tokens"] == cold["usage"]["completion_tokens"]
    assert out["message"] == cold["choices"][0]["message"]["content"]


# Teacher-forced decode steps through the page's engine: logits after the prompt, then after each forced token.
_FORWARD_JS = """(async ([prompt, forced]) => {
  const out = await window.webbuildApp.engine.forwardTokens(prompt, forced);
  return out.map((logits) => Array.from(logits));
})"""


def test_replayed_decode_steps_give_the_cpu_engines_logits(tab: Any, tiny_site: Path) -> None:
    from webbuild.engine.engine import Engine

    # 40 decode steps from a 5-token prompt cross the KV cache's 16-token pages twice: each page count is a
    # new recording's key, recorded twice through the VM, then replayed. The second pass replays every step
    # from the first pass's recordings. Forced tokens are random, so every step's logits differ.
    rng = np.random.default_rng(0)
    engine = Engine(tiny_site)
    vocab = engine.model.cfg.vocab_size
    prompt, forced = [int(t) for t in rng.integers(0, vocab, 5)], [int(t) for t in rng.integers(0, vocab, 40)]
    want = np.stack(engine.score(prompt, forced))
    for attempt in ("recording", "replaying"):
        got = np.asarray(tab.evaluate(f"{_FORWARD_JS}({json.dumps([prompt, forced])})"), dtype=np.float32)
        assert got.shape == want.shape
        worst = np.abs(got - want).max(axis=1)
        assert worst.max() < 1e-3, f"{attempt}: logits differ by up to {worst.max():.3g} (step {worst.argmax()})"
        assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
