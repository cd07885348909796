"""webbuild.verify.metrics: agreement figures between two engines' logits over one teacher-forced sequence."""

from __future__ import annotations

import numpy as np
import pytest

from webbuild.verify.metrics import Thresholds, compare, log_softmax, summarize

VOCAB = 50


def logits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, VOCAB)).astype(np.float32) * 3


def test_identical_logits_agree_completely() -> None:
    ref = logits(10)
    m = compare(ref, ref.copy(), prompt_len=4)
    s = summarize([m])
    assert s.positions == 10
    assert s.top1_pct == 100.0
    assert s.kl_mean == pytest.approx(0.0, abs=1e-12)
    assert s.abs_max == 0.0
    assert (s.greedy, s.greedy_of) == (6, 6)  # rows 3..8 predict the 6 continuation tokens
    assert m.first_mismatch() is None


def test_kl_matches_its_definition_and_is_not_symmetric() -> None:
    ref, cand = logits(3, seed=1), logits(3, seed=2)
    p, q = np.exp(log_softmax(ref)), np.exp(log_softmax(cand))
    expected = (p * np.log(p / q)).sum(axis=-1)
    m = compare(ref, cand, prompt_len=1)
    np.testing.assert_allclose(m.kl, expected, rtol=1e-9)
    assert not np.allclose(compare(cand, ref, prompt_len=1).kl, m.kl)


def test_a_shift_of_every_logit_changes_no_probability_but_shows_in_abs_diff() -> None:
    ref = logits(4)
    m = compare(ref, ref + 0.5, prompt_len=2)
    assert m.kl.max() < 1e-9
    np.testing.assert_allclose(m.abs_max, 0.5, rtol=1e-6)
    np.testing.assert_allclose(m.abs_mean, 0.5, rtol=1e-6)


def test_greedy_run_stops_at_the_first_continuation_token_the_candidate_would_not_pick() -> None:
    ref = logits(8)
    cand = ref.copy()
    row = 5  # prompt_len 3: rows 2..7 predict continuation tokens 0..5; row 5 is token 3
    cand[row, ref[row].argmax()] = -100
    m = compare(ref, cand, prompt_len=3, continuation=list(ref.argmax(axis=-1)[2:8]))
    assert m.greedy == 3
    assert m.greedy_of == 6
    assert m.first_mismatch() == row
    assert m.ref_margin[row] > 0
    assert summarize([m]).top1_pct == pytest.approx(100 * 7 / 8)


def test_the_forced_continuation_wins_over_the_references_argmax() -> None:
    """The CPU reference's own greedy tokens decide the greedy run, even where its scoring pass ties."""
    ref = logits(5)
    forced = [int(t) for t in ref.argmax(axis=-1)[1:5]]
    forced[0] = (forced[0] + 1) % VOCAB
    assert compare(ref, ref, prompt_len=2, continuation=forced).greedy == 0


def test_summaries_pool_positions_across_sequences() -> None:
    a = compare(logits(4), logits(4), prompt_len=1)
    b = compare(logits(12, 3), logits(12, 3), prompt_len=1)
    s = summarize([a, b])
    assert s.positions == 16
    assert s.top1_pct == pytest.approx(100 * (a.agree.sum() + 12) / 16)
    assert s.kl_mean == pytest.approx(a.kl.sum() / 16)
    assert s.kl_max == pytest.approx(a.kl.max())


def test_nan_logits_fail_every_threshold() -> None:
    ref = logits(3)
    cand = ref.copy()
    cand[1, 4] = np.nan
    s = summarize([compare(ref, cand, prompt_len=1)])
    failures = Thresholds().failures(s)
    assert any("KL" in f for f in failures) and any("Δlogit" in f for f in failures)
    assert s.as_dict()["kl_mean"] is None  # JSON-safe


def test_thresholds_name_each_figure_that_crosses_its_limit() -> None:
    ref = logits(20)
    cand = ref + np.random.default_rng(9).standard_normal(ref.shape).astype(np.float32) * 0.01
    s = summarize([compare(ref, cand, prompt_len=1)])
    assert Thresholds().failures(s) == []
    strict = Thresholds(min_top1=100.0, max_kl=1e-9, max_abs_logit=1e-3)
    failures = strict.failures(s)
    assert len(failures) == 2 and "mean KL" in failures[0] and "max |Δlogit|" in failures[1]


def test_mismatched_shapes_and_prompt_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="shapes"):
        compare(logits(3), logits(4), prompt_len=1)
    with pytest.raises(ValueError, match="prompt_len"):
        compare(logits(3), logits(3), prompt_len=0)
