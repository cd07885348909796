"""The site's own runtime in headless Chromium, as a scorer for ``webbuild verify``.

The site is served by our Starlette app on loopback and its chat page opened as a visitor would (Chromium
driven over the DevTools pipe, webbuild/cdp.py, as `webbuild bench` drives it: no Playwright); the page
loads the model in its Worker, and token sequences are scored through the public JS API
(``window.webbuildApp.engine.scoreTokens``). Full logits (196 KB a position for a 49152-token vocabulary)
come back from the page in base64 slices, so no single message gets large.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from webbuild import _log
from webbuild.errors import WebbuildError

_SLICE_BYTES = 8 * 1024 * 1024

_READY_JS = "['ready', 'error'].includes(document.body?.dataset.state)"  # no body before the page has parsed

_RELOAD_JS = """async (model) => {
  const url = new URL('manifest.json', location.href).href;
  return await window.webbuildApp.engine.reload(url, { model });
}"""

_SCORE_JS = """async (ids) => {
  const s = await window.webbuildApp.engine.scoreTokens(ids, { topK: 1, fullLogits: true });
  window.__webbuildVerify = s;
  return { positions: s.positions, vocabSize: s.vocabSize };
}"""

# Base64 of a slice of the last scores' logits; String.fromCharCode takes the bytes in 32 KiB pieces.
_SLICE_JS = """([start, end]) => {
  const a = window.__webbuildVerify.logits.subarray(start, end);
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}"""


class BrowserScorer:
    """Opens ``site`` in headless Chromium on entry (the model starts loading at once); ``ready()`` waits
    for it and switches to ``model_id`` when the page chose another variant."""

    name = "browser"

    def __init__(self, site: Path, *, model_id: str | None = None, load_timeout_s: float = 1800) -> None:
        self.site = Path(site)
        self.model_id = model_id
        self.load_timeout_s = load_timeout_s
        self.info: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()
        self._page: Any = None

    def __enter__(self) -> BrowserScorer:
        from webbuild.browser import find_chromium, launch_chromium
        from webbuild.serve.app import serving

        find_chromium()
        try:
            url = self._stack.enter_context(serving(self.site))
            chromium = self._stack.enter_context(launch_chromium())
            _log.step(f"browser: opening {url} (headless Chromium, WebGPU)")
            self._page = chromium.open(url)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def ready(self) -> dict[str, Any]:
        """Waits until the page has loaded its model; returns the engine's model info."""
        page = self._page
        page.wait_for(_READY_JS, timeout_s=self.load_timeout_s, poll_s=0.5)
        if page.evaluate("document.body.dataset.state") == "error":
            text = page.evaluate("document.getElementById('error').innerText").strip().replace("\n", " ")
            raise WebbuildError(f"the site failed to load its model in Chromium: {text}", tip=self._tip())
        info = page.evaluate("window.webbuildApp.engine.getModelInfo()")
        if self.model_id and info.get("id") != self.model_id:
            _log.step(f"browser: switching from {info.get('id')} to {self.model_id}")
            info = page.evaluate(f"({_RELOAD_JS})({json.dumps(self.model_id)})")
        self.info = info
        return info

    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        """[len(token_ids), vocab] float32 logits from the page's engine."""
        page = self._page
        try:
            shape = page.evaluate(f"({_SCORE_JS})({json.dumps([int(t) for t in token_ids])})")
            n, vocab = shape["positions"], shape["vocabSize"]
            step = max(1, _SLICE_BYTES // 4)
            parts = [
                np.frombuffer(
                    base64.b64decode(page.evaluate(f"({_SLICE_JS})([{start}, {min(start + step, n * vocab)}])")), "<f4"
                )
                for start in range(0, n * vocab, step)
            ]
        except WebbuildError as exc:  # the page threw: a typed runtime error, or a lost device
            raise WebbuildError(f"scoring in the browser failed: {exc.message}", tip=self._tip()) from exc
        finally:
            with contextlib.suppress(Exception):
                page.evaluate("delete window.__webbuildVerify")
        return np.concatenate(parts).reshape(n, vocab)

    def _tip(self) -> str:
        errors = "; ".join(self._page.errors()[:2]) if self._page is not None else ""
        return f"Page errors: {errors}" if errors else "Open the site with `webbuild serve` to see it in a browser."
