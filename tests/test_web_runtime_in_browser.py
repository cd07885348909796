"""The browser runtime (web_runtime/) on a real tiny site in headless Chromium (SwiftShader): a chat's second
turn reuses the first turn's KV cache, prefilling only its new tokens, and replies as from an empty cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tiny_llama import package_tiny_site

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def tab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from webbuild.commands.bench import site_page

    with site_page(package_tiny_site(tmp_path_factory.mktemp("multi-turn"), seed=5)) as (tab, _):
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
