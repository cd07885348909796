"""``webbuild bench``: load time, time to first token and tokens/s of a site in headless Chromium,
beside the Python engine (CPU, or CUDA where there is a GPU) on the same files and prompt."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from webbuild import _log
from webbuild.serve.app import serving
from webbuild.verify.report import adapter_name

BENCH_PROMPT = "Write one sentence about the sea."


@dataclass
class RunFigures:
    where: str
    load_s: float
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _figures(where: str, load_s: float, usage: dict[str, Any]) -> RunFigures:
    extra = usage.get("extra", {})
    return RunFigures(
        where=where,
        load_s=round(load_s, 2),
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        time_to_first_token_s=round(extra.get("time_to_first_token_s", 0.0), 3),
        prefill_tokens_per_s=round(extra.get("prefill_tokens_per_s", 0.0), 3),
        decode_tokens_per_s=round(extra.get("decode_tokens_per_s", 0.0), 3),
    )


def bench_browser(site: Path, prompt: str = BENCH_PROMPT, max_tokens: int = 8) -> RunFigures:
    from playwright.sync_api import sync_playwright

    from webbuild.browser import launch_options

    request = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    with serving(site) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(**launch_options())
        try:
            page = browser.new_page()
            t0 = time.monotonic()
            page.goto(url)
            page.wait_for_selector("#prompt:not([disabled])", timeout=600_000)
            load_s = time.monotonic() - t0
            _log.step(f"browser: model loaded in {load_s:.1f}s; generating {max_tokens} tokens")
            reply = page.evaluate(
                "async (req) => await window.webbuildApp.engine.chat.completions.create(req)", request
            )
            adapter = page.evaluate("async () => (await window.webbuildApp.engine.getModelInfo()).adapter")
        finally:
            browser.close()
    return _figures(f"browser ({adapter_name(adapter or {})})", load_s, reply["usage"])


def bench_engine(site: Path, device: str, prompt: str = BENCH_PROMPT, max_tokens: int = 8) -> RunFigures:
    """The Python engine on ``device`` (cpu: the llvm build; cuda: the CUDA build, compiled on first use)."""
    from webbuild.engine.engine import Engine

    t0 = time.monotonic()
    engine = Engine(site, device=device)
    load_s = time.monotonic() - t0
    reply = engine.chat.completions.create(
        messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0
    )
    return _figures(f"Python engine ({device})", load_s, reply["usage"])
