"""Next-token choice from logits: OpenAI's logit_bias and presence/frequency penalties, then greedy at
temperature 0, else temperature + nucleus (top_p) sampling; and the log probabilities OpenAI's ``logprobs``
report. web_runtime/sampler.js applies the same rules."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def apply_penalties(
    logits: np.ndarray,
    counts: Mapping[int, int],
    logit_bias: Mapping[int, float] | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
) -> np.ndarray:
    """A copy of ``logits`` with the bias added and, for every token generated so far (``counts``: id -> times),
    ``presence_penalty + frequency_penalty * count`` subtracted."""
    out = np.array(logits, dtype=np.float32)
    for token, bias in (logit_bias or {}).items():
        if 0 <= token < out.size:
            out[token] += bias
    if presence_penalty or frequency_penalty:
        for token, count in counts.items():
            out[token] -= presence_penalty + frequency_penalty * count
    return out


class Sampler:
    """Seeded per request, so the same seed and request give the same tokens. Choice ``choice`` of a request
    with ``n`` choices draws from its own stream derived from the seed and its index; choice 0's is the
    stream of a request with n = 1."""

    def __init__(self, seed: int | None = None, choice: int = 0) -> None:
        if seed is None:
            self.rng = np.random.default_rng()
        else:
            seed %= 2**64  # OpenAI seeds may be negative
            self.rng = np.random.default_rng([seed, choice] if choice else seed)

    def sample(self, logits: np.ndarray, temperature: float = 1.0, top_p: float = 1.0) -> int:
        if temperature <= 0:
            return int(np.argmax(logits))
        # Shift before dividing: the best logit becomes 0 and stays 0 at any temperature > 0, so even 5e-324
        # (where logits / temperature would be inf - inf = nan) draws from a finite distribution (the argmax).
        wide = logits.astype(np.float64)
        with np.errstate(over="ignore"):  # -x / 5e-324 = -inf on purpose: exp(-inf) = 0
            probs = np.exp((wide - wide.max()) / temperature)
        probs /= probs.sum()
        if top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
            kept = probs[keep] / probs[keep].sum()
            return int(keep[self.rng.choice(len(keep), p=kept)])
        return int(self.rng.choice(len(probs), p=probs))


def token_logprobs(logits: np.ndarray, token: int, top: int = 0) -> tuple[float, list[tuple[int, float]]]:
    """The natural-log probability of ``token`` under a softmax over all of ``logits``, and the ``top`` most
    likely token ids with theirs, best first (ties by lower id). Callers pass the logits after bias and
    penalties but before temperature and top_p, so the values do not depend on how the token was drawn."""
    wide = logits.astype(np.float64)
    peak = wide.max()
    logprobs = wide - (peak + np.log(np.exp(wide - peak).sum()))
    best: list[tuple[int, float]] = []
    if top > 0:
        k = min(top, logprobs.size)
        kth = -np.partition(-logprobs, k - 1)[k - 1]
        ids = np.flatnonzero(logprobs >= kth)  # every tie at the k-th value, so the order below decides
        best = sorted(((int(i), float(logprobs[i])) for i in ids), key=lambda p: (-p[1], p[0]))[:k]
    return float(logprobs[token]), best
