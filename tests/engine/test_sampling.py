import numpy as np

from webbuild.engine.sampling import Sampler, token_logprobs


def test_temperature_zero_is_argmax():
    assert Sampler().sample(np.array([0.1, 3.0, 2.9]), temperature=0) == 1


def test_same_seed_same_sequence():
    logits = np.zeros(50)
    a = [Sampler(3).sample(logits) for _ in range(1)] + [Sampler(3).sample(logits)]
    assert a[0] == a[1]
    s1, s2 = Sampler(5), Sampler(5)
    assert [s1.sample(logits) for _ in range(20)] == [s2.sample(logits) for _ in range(20)]


def test_top_p_keeps_only_the_nucleus():
    logits = np.log(np.array([0.6, 0.3, 0.05, 0.05]))
    picks = {Sampler(i).sample(logits, top_p=0.8) for i in range(200)}
    assert picks == {0, 1}


def test_negative_seed_is_accepted_and_deterministic():
    logits = np.zeros(10)
    assert Sampler(-5).sample(logits) == Sampler(-5).sample(logits)


def test_logit_bias_can_force_or_forbid_a_token():
    from webbuild.engine.sampling import apply_penalties

    logits = np.array([5.0, 1.0, 0.0])
    assert Sampler().sample(apply_penalties(logits, {}, {2: 100.0}), temperature=0) == 2
    assert Sampler().sample(apply_penalties(logits, {}, {0: -100.0}), temperature=0) == 1


def test_presence_and_frequency_penalties_lower_generated_tokens():
    from webbuild.engine.sampling import apply_penalties

    logits = np.array([3.0, 2.5, 0.0])
    out = apply_penalties(logits, {0: 2}, presence_penalty=0.5, frequency_penalty=0.25)
    assert out.tolist() == [2.0, 2.5, 0.0]  # 3 - (0.5 + 0.25 * 2)
    assert logits.tolist() == [3.0, 2.5, 0.0]  # the input is left alone


def test_each_choice_has_its_own_seeded_stream_and_choice_zero_is_the_plain_one():
    logits = np.zeros(1000)
    for choice in range(3):  # reproducible per choice
        assert Sampler(7, choice).sample(logits) == Sampler(7, choice).sample(logits)
    plain, first = Sampler(7), Sampler(7, 0)
    assert [plain.sample(logits) for _ in range(10)] == [first.sample(logits) for _ in range(10)]
    one, two = Sampler(7, 1), Sampler(7, 2)
    assert [one.sample(logits) for _ in range(10)] != [two.sample(logits) for _ in range(10)]


def test_token_logprobs_are_a_log_softmax_over_the_whole_vocabulary():
    logits = np.random.default_rng(0).normal(size=500).astype(np.float32) * 4
    token = int(np.argmax(logits))
    logprob, top = token_logprobs(logits, token, 5)
    every = [token_logprobs(logits, t)[0] for t in range(logits.size)]
    assert np.isclose(np.exp(every).sum(), 1.0)
    assert np.isclose(logprob, logits[token] - np.log(np.exp(logits.astype(np.float64)).sum()))
    assert [t for t, _ in top] == list(np.argsort(-logits)[:5]) and top[0] == (token, logprob)
    assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    assert token_logprobs(logits, token)[1] == []


def test_top_logprobs_ties_go_to_the_lower_id():
    _, top = token_logprobs(np.array([0.0, 2.0, 1.0, 2.0, 2.0]), 0, 2)
    assert [t for t, _ in top] == [1, 3]


def test_tiny_temperatures_draw_the_argmax_instead_of_failing():
    """5e-324 passes validation (0 < t <= 2); logits / t would overflow to inf - inf = nan."""
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    for temperature in (5e-324, 1e-310, 1e-30):
        assert {Sampler(seed).sample(logits, temperature) for seed in range(20)} == {1}
        assert Sampler(1).sample(logits, temperature, top_p=0.5) == 1
