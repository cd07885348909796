"""Next-token choice from logits: greedy at temperature 0, else temperature + nucleus (top_p) sampling."""

from __future__ import annotations

import numpy as np


class Sampler:
    """Seeded per request, so the same seed and request give the same tokens."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(None if seed is None else seed % 2**64)  # OpenAI seeds may be negative

    def sample(self, logits: np.ndarray, temperature: float = 1.0, top_p: float = 1.0) -> int:
        if temperature <= 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
            kept = probs[keep] / probs[keep].sum()
            return int(keep[self.rng.choice(len(keep), p=kept)])
        return int(self.rng.choice(len(probs), p=probs))
