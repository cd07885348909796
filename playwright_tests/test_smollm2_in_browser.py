"""The real SmolLM2 site (its preset's q4f32_m) in headless Chromium (software WebGPU): the chat page streams a reply.

SwiftShader runs WebGPU on the CPU (~0.1 token/s for this model), so the prompt is short and the reply is stopped
early. The real model's tokens and logits against the CPU build are test_verify_smollm2.py's.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page

pytestmark = [pytest.mark.slow, pytest.mark.toolchain]

LOAD_TIMEOUT_MS = 300_000
QUESTION = "What is the capital of France?"


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
