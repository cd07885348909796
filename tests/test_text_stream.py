from webbuild.text_stream import TextStream


def _stream(pieces, stop=()):
    vocab = dict(enumerate(pieces))
    s = TextStream(lambda ids: "".join(vocab[i] for i in ids), stop)
    out = [s.push(i) for i in range(len(pieces)) if not s.stopped]
    return "".join(out) + s.flush(), s.stopped


def test_plain_text_passes_through():
    assert _stream(["Hel", "lo", " world"]) == ("Hello world", False)


def test_stop_string_is_never_emitted_even_across_tokens():
    assert _stream(["Hello", " wo", "rld", "!"], stop=["world"]) == ("Hello ", True)


def test_text_that_only_looks_like_a_stop_prefix_is_released_later():
    assert _stream(["a", "wo", "w"], stop=["world"]) == ("awow", False)


def test_incomplete_utf8_waits_for_the_next_token():
    s = TextStream(lambda ids: ["caf\ufffd", "café"][len(ids) - 1])
    assert s.push(0) == ""
    assert s.push(1) == "café"
