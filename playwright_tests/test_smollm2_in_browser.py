"""The real SmolLM2 site (its preset's q4f32_m) in headless Chromium (software WebGPU), checked against the CPU engine.

SwiftShader runs WebGPU on the CPU (~0.1 token/s for this model), so prompts are short and token counts small.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from playwright.sync_api import Page

pytestmark = [pytest.mark.slow, pytest.mark.toolchain]

LOAD_TIMEOUT_MS = 300_000
QUESTION = "What is the capital of France?"
GREEDY_TOKENS = 8
# Same kernels modulo the GPU's summation order and f32 rounding: logits of magnitude ~20 agree to ~1e-3.
LOGIT_ATOL = 2e-2


def _open(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#prompt:not([disabled])", timeout=LOAD_TIMEOUT_MS)


def test_chat_message_streams_a_reply(page: Page, site_url: str) -> None:
    _open(page, site_url)
    page.fill("#prompt", QUESTION)
    page.click("#send")
    seen: list[str] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        bubbles = page.locator(".msg.assistant")
        text = bubbles.last.inner_text() if bubbles.count() else ""
        if text and (not seen or text != seen[-1]):
            seen.append(text)
            if len(seen) == 3:  # streamed: the Stop button ends it (a sampled reply can run for minutes here)
                page.click("#stop")
        if page.evaluate("document.body.dataset.state") == "ready" and seen:
            break
        time.sleep(0.5)
    assert seen, "no reply text appeared"
    assert len(seen) >= 2, f"the reply arrived in one piece, not streamed: {seen}"
    assert "tok/s" in page.inner_text("#stats")


def test_browser_greedy_tokens_and_logits_match_cpu_engine(page: Page, site_url: str, smollm2_cpu) -> None:
    prompt = smollm2_cpu.encode_messages([{"role": "user", "content": QUESTION}])
    cpu_tokens, cpu_logits = smollm2_cpu.greedy(prompt, GREEDY_TOKENS)

    _open(page, site_url)
    browser_logits = page.evaluate(
        """async ([prompt, forced]) => {
             const out = await window.webbuildApp.engine.forwardTokens(prompt, forced);
             return out.map((l) => Array.from(l));
           }""",
        [prompt, cpu_tokens[:-1]],
    )
    browser_logits = [np.asarray(step, dtype=np.float32) for step in browser_logits]
    browser_tokens = [int(np.argmax(step)) for step in browser_logits]
    assert browser_tokens == cpu_tokens, (
        f"greedy tokens differ: browser {smollm2_cpu.decode(browser_tokens)!r} "
        f"vs cpu {smollm2_cpu.decode(cpu_tokens)!r}"
    )
    first_step = np.abs(browser_logits[0] - cpu_logits[0])
    assert first_step.max() < LOGIT_ATOL, f"first-step logits differ by up to {first_step.max():.3g}"
