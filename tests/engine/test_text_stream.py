import random
import time

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


def _utf8(vocab: list[bytes]):
    """A byte-level tokenizer's decode: the tokens' bytes joined, then read as UTF-8."""
    return lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", "replace")


def test_incomplete_utf8_waits_for_the_next_token():
    s = TextStream(_utf8([b"caf\xc3", b"\xa9"]))
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
    text, released = _released([0, 1, 2], decode=_utf8([b"caf\xc3", b"\xa9", b"\xe2"]))
    # token 0 made "caf\ufffd", token 1 finished "é": both span "café", as the browser runtime places them
    assert (text, released) == ("café", [(0, 0), (1, 0)])


def _stopped_text(pieces: list[str], stops: list[str]) -> str:
    """The specification, rescanning everything: after each piece, the earliest start of any stop string in
    the text so far ends the output there."""
    text = ""
    for piece in pieces:
        text += piece
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            return text[: min(hits)]
    return text


def test_stop_strings_match_the_rescanning_specification_on_random_streams():
    rng = random.Random(7)
    for _ in range(400):
        stops = ["".join(rng.choices("ab", k=rng.randint(1, 5))) for _ in range(rng.randint(1, 4))]
        pieces = ["".join(rng.choices("abc", k=rng.randint(1, 3))) for _ in range(rng.randint(1, 12))]
        assert _stream(pieces, stops)[0] == _stopped_text(pieces, stops), (pieces, stops)


def test_of_two_stops_ending_in_one_piece_the_earlier_starting_one_wins():
    assert _stream(["x", "abcdy"], stop=["bc", "abcd"]) == ("x", True)
    assert _stream(["aa", "ab", "c"], stop=["aab"]) == ("a", True)  # a stop that overlaps itself


def test_long_outputs_and_long_stop_strings_cost_linear_time():
    """Each token decodes a few tokens, not the whole output, and feeds its characters to the stop matchers once:
    2,000 tokens against four 10,000-character stops (the reported 41 s) take milliseconds."""
    words = [f" w{i % 97}" for i in range(2000)]
    decoded: list[int] = []

    def decode(ids):
        decoded.append(len(ids))
        return "".join(words[i] for i in ids)

    stops = ["x" * 10_000, " w1" * 3000 + "!", "y" * 9999 + "z", " w5 w6" * 1500 + "?"]
    s = TextStream(decode, stops)
    started = time.perf_counter()
    text = "".join(s.push(i) for i in range(len(words))) + s.flush()
    assert time.perf_counter() - started < 1.0
    assert text == "".join(words) and not s.stopped
    assert max(decoded) <= 3
