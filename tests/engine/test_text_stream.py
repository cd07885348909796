from webbuild.engine.text_stream import TextStream


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


def _released(pieces, stop=(), decode=None):
    """Pushes every piece (until a stop) then flushes; returns the text and the released (index, offset) pairs."""
    vocab = dict(enumerate(pieces))
    s = TextStream(decode or (lambda ids: "".join(vocab[i] for i in ids)), stop)
    text, released = "", []
    for i in range(len(pieces)):
        if s.stopped:
            break
        text += s.push(i)
        released += s.released()
    text += s.flush()
    return text, released + s.released()


def test_every_token_is_released_with_its_offset_once_its_text_is_out():
    assert _released(["Hel", "lo", " world"]) == ("Hello world", [(0, 0), (1, 3), (2, 5)])


def test_a_token_is_released_with_the_delta_that_completes_its_text():
    vocab = ["a", "wo", "w", "x"]
    s = TextStream(lambda ids: "".join(vocab[i] for i in ids), ["world"])
    assert (s.push(0), s.released()) == ("a", [(0, 0)])
    assert (s.push(1), s.released()) == ("", [])  # "wo" may start the stop string
    assert (s.push(2), s.released()) == ("wo", [(1, 1)])
    assert (s.push(3), s.released()) == ("wx", [(2, 3), (3, 4)])


def test_tokens_of_a_stop_string_are_not_released_but_one_that_began_before_it_is():
    assert _released(["Hel", "lo wo", "rld", "!"], stop=["world"]) == ("Hello ", [(0, 0), (1, 3)])
    assert _released(["Hel", "lo", " wo", "rld"], stop=["world"]) == ("Hello ", [(0, 0), (1, 3), (2, 5)])


def test_tokens_of_one_character_are_released_together_and_a_cut_character_never():
    texts = {1: "caf\ufffd", 2: "café", 3: "café\ufffd"}
    text, released = _released([0, 1, 2], decode=lambda ids: texts[len(ids)])
    # token 0 made "caf\ufffd", token 1 finished "é": both span "café", as the browser runtime places them
    assert (text, released) == ("café", [(0, 0), (1, 0)])
