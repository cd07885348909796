"""Agreement between two engines' logits over the same teacher-forced token sequence.

Row i of a [positions, vocab] logits array is the prediction for token i + 1. For each position: whether
the top-1 tokens agree, the KL divergence KL(reference || candidate) over the whole vocabulary, and the
largest and mean absolute logit difference. Over a sequence: top-1 agreement %, mean and max KL, max and
mean |Δlogit|, and how many continuation tokens the candidate would have generated identically (greedy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_ROWS = 64  # rows per block: bounds the float64 temporaries to 64 x vocab


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float64."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class PositionMetrics:
    """Per-position figures of one comparison over one sequence (arrays of length ``positions``)."""

    ref_top: np.ndarray  # int: reference's top-1 token at each position
    cand_top: np.ndarray  # int: candidate's top-1 token
    kl: np.ndarray  # KL(reference || candidate), nats
    abs_max: np.ndarray  # max over the vocabulary of |candidate - reference| logits
    abs_mean: np.ndarray  # mean over the vocabulary
    ref_margin: np.ndarray  # reference's logit of its top-1 minus its logit of the candidate's top-1 (0 if same)
    prompt_len: int  # positions before the continuation (row prompt_len - 1 predicts its first token)
    greedy: int  # leading continuation tokens the candidate picks identically
    greedy_of: int  # continuation tokens checked

    @property
    def positions(self) -> int:
        return len(self.kl)

    @property
    def agree(self) -> np.ndarray:
        return self.ref_top == self.cand_top

    def first_mismatch(self) -> int | None:
        """The first position whose top-1 tokens differ."""
        bad = np.flatnonzero(~self.agree)
        return int(bad[0]) if len(bad) else None


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    prompt_len: int,
    continuation: Sequence[int] | None = None,
) -> PositionMetrics:
    """Compares two [positions, vocab] logits arrays of one sequence whose first ``prompt_len`` tokens are
    the prompt. ``continuation`` is the greedy continuation that was forced (the reference's own tokens);
    without it the reference's top-1 at each continuation position stands in for it."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"logits shapes differ: {reference.shape} vs {candidate.shape}")
    n = reference.shape[0]
    if not 1 <= prompt_len <= n:
        raise ValueError(f"prompt_len {prompt_len} is outside 1..{n}")
    kl, abs_max, abs_mean = np.empty(n), np.empty(n), np.empty(n)
    for start in range(0, n, _ROWS):
        rows = slice(start, start + _ROWS)
        ref_lp, cand_lp = log_softmax(reference[rows]), log_softmax(candidate[rows])
        kl[rows] = (np.exp(ref_lp) * (ref_lp - cand_lp)).sum(axis=-1)
        diff = np.abs(candidate[rows].astype(np.float64) - reference[rows])
        abs_max[rows], abs_mean[rows] = diff.max(axis=-1), diff.mean(axis=-1)
    ref_top, cand_top = reference.argmax(axis=-1), candidate.argmax(axis=-1)
    rows_n = np.arange(n)
    ref_margin = reference[rows_n, ref_top].astype(np.float64) - reference[rows_n, cand_top]
    # Row prompt_len - 1 + j predicts continuation token j (the last row predicts past the sequence).
    checked = n - prompt_len if continuation is None else min(len(continuation), n - prompt_len + 1)
    expected = ref_top[prompt_len - 1 : prompt_len - 1 + checked] if continuation is None else continuation
    picked = cand_top[prompt_len - 1 : prompt_len - 1 + checked]
    same = np.asarray(picked) == np.asarray(expected[:checked])
    greedy = int(checked if same.all() else np.argmin(same))
    return PositionMetrics(
        ref_top=ref_top,
        cand_top=cand_top,
        kl=np.maximum(kl, 0.0),  # rounding can make a near-zero KL slightly negative
        abs_max=abs_max,
        abs_mean=abs_mean,
        ref_margin=ref_margin,
        prompt_len=prompt_len,
        greedy=greedy,
        greedy_of=checked,
    )


@dataclass(frozen=True)
class Summary:
    """Figures pooled over positions (of one sequence, or of several)."""

    positions: int
    top1_pct: float
    kl_mean: float
    kl_max: float
    abs_max: float
    abs_mean: float
    greedy: int
    greedy_of: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: _round(v) for k, v in self.__dict__.items()}


def summarize(metrics: Sequence[PositionMetrics]) -> Summary:
    """Pools positions of one or more sequences: every position weighs the same."""
    if not metrics:
        raise ValueError("nothing to summarize")
    agree = np.concatenate([m.agree for m in metrics])
    kl = np.concatenate([m.kl for m in metrics])
    abs_max = np.concatenate([m.abs_max for m in metrics])
    abs_mean = np.concatenate([m.abs_mean for m in metrics])
    return Summary(
        positions=len(kl),
        top1_pct=float(agree.mean() * 100),
        kl_mean=float(kl.mean()),
        kl_max=float(kl.max()),
        abs_max=float(abs_max.max()),
        abs_mean=float(abs_mean.mean()),
        greedy=sum(m.greedy for m in metrics),
        greedy_of=sum(m.greedy_of for m in metrics),
    )


@dataclass(frozen=True)
class Thresholds:
    """Limits for the pooled figures of the browser against a same-quantization reference."""

    min_top1: float = 99.0  # %
    max_kl: float = 1e-3  # mean KL(reference || browser), nats
    max_abs_logit: float = 0.05  # largest |Δlogit| anywhere

    def failures(self, summary: Summary) -> list[str]:
        """What crossed a limit, in words; empty when all pass. NaN figures (a broken kernel) fail."""
        out = []
        if not summary.top1_pct >= self.min_top1:
            out.append(f"top-1 agreement {summary.top1_pct:.2f}% < {self.min_top1:g}%")
        if not summary.kl_mean <= self.max_kl:
            out.append(f"mean KL {summary.kl_mean:.3g} > {self.max_kl:g}")
        if not summary.abs_max <= self.max_abs_logit:
            out.append(f"max |Δlogit| {summary.abs_max:.3g} > {self.max_abs_logit:g}")
        return out


def _round(value: float | int) -> float | int | None:
    """Four significant digits keep the JSON readable; NaN or infinity (a broken kernel) becomes None."""
    if isinstance(value, int):
        return value
    return float(f"{value:.4g}") if np.isfinite(value) else None
