"""Turns generated token ids into text deltas: whole UTF-8 characters only, stop strings never emitted.

Both jobs are incremental, so a token costs the same at the end of a long output as at its start, whatever the
stop strings: each step decodes a short window of recent tokens (as web_runtime/src/tokenizer.js
``IncrementalDecoder`` does), and each new character advances one automaton per stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class StopMatcher:
    """Finds stop strings in text fed piece by piece, looking at each character once (Knuth-Morris-Pratt).

    ``held`` is the length of the longest end of the text that is still the start of some stop string: text
    that cannot be shown until the next piece decides it.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._fallback = [_prefix_function(s) for s in self.stops]
        self._matched = [0] * len(self.stops)  # per stop: characters of it the text ends with

    @property
    def held(self) -> int:
        return max(self._matched, default=0)

    def feed(self, piece: str) -> int | None:
        """Advances over ``piece``; where in it the earliest-starting stop string that ends in it begins
        (possibly before it: a negative index), or None."""
        first: int | None = None
        for k, (stop, fallback) in enumerate(zip(self.stops, self._fallback, strict=True)):
            matched = self._matched[k]
            for i, char in enumerate(piece):
                while matched and stop[matched] != char:
                    matched = fallback[matched - 1]
                if stop[matched] == char:
                    matched += 1
                if matched == len(stop):
                    start = i + 1 - len(stop)
                    first = start if first is None else min(first, start)
                    matched = fallback[matched - 1]
                    break  # later ends of this stop start later
            self._matched[k] = matched
        return first


def _prefix_function(s: str) -> list[int]:
    """For each prefix of ``s``, the length of its longest proper prefix that is also its suffix."""
    out = [0] * len(s)
    k = 0
    for i in range(1, len(s)):
        while k and s[i] != s[k]:
            k = out[k - 1]
        if s[i] == s[k]:
            k += 1
        out[i] = k
    return out


class TextStream:
    """Feed token ids one at a time; ``push`` returns the text that is safe to show now.

    Text that might be the start of a stop string is held back until it is known not to be one.
    ``released()`` says which tokens that text belongs to, so per-token data (logprobs) travels with it.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.matcher = StopMatcher(stop)
        self.ids: list[int] = []
        self.length = 0  # characters of the decoded text so far
        self.emitted = 0  # characters of it already returned
        self.stopped = False
        self._held = ""  # the decoded text past ``emitted``
        # The decode window: tokens before _prefix are settled; those before _read have their text counted.
        self._prefix = 0
        self._read = 0
        # Where each token's text starts and ends in the decoded text; None while it ends inside a UTF-8
        # character. Tokens that together make one character all span that whole character.
        self._starts: list[int] = []
        self._ends: list[int | None] = []
        self._released = 0  # tokens already handed out by released()

    def _new_text(self) -> str | None:
        """The text the tokens past ``_read`` add, or None while it ends inside a UTF-8 character."""
        settled = self.decode(self.ids[self._prefix : self._read])
        window = self.decode(self.ids[self._prefix :])
        if window.endswith("\ufffd"):
            return None
        if len(window) <= len(settled):  # e.g. a special token that decodes to nothing: the window grows
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return window[len(settled) :]

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        self._ends.append(None)
        new = self._new_text()
        if new is None:  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        start = self.length
        self.length += len(new)
        first = len(self._ends) - 1  # this token and those that waited for it
        while first > 0 and self._ends[first - 1] is None:
            first -= 1
        for i in range(first, len(self._ends)):
            self._starts.append(start)
            self._ends[i] = self.length
        self._held += new
        hit = self.matcher.feed(new)
        if hit is not None:
            self.stopped = True
            cut = max(start + hit, self.emitted)
            return self._emit(cut)
        return self._emit(self.length - self.matcher.held)

    def _emit(self, until: int) -> str:
        """Returns the held text up to offset ``until`` (never before ``emitted``)."""
        if until <= self.emitted:
            return ""
        delta, self._held = self._held[: until - self.emitted], self._held[until - self.emitted :]
        self.emitted = until
        return delta

    def flush(self) -> str:
        """Whatever was held back, once generation ended without a stop string (a trailing incomplete
        character is dropped)."""
        if self.stopped:
            return ""
        settled = self.decode(self.ids[self._prefix : self._read])
        tail = self.decode(self.ids[self._prefix :])[len(settled) :].rstrip("\ufffd")
        self._prefix = self._read = len(self.ids)
        delta = self._held + tail
        self._held = ""
        self.length += len(tail)
        self.emitted = self.length
        return delta

    def released(self) -> list[tuple[int, int]]:
        """The tokens whose text is now wholly emitted, as (index, offset of its text), each once and in order.

        After a stop string, a token that began before it counts as emitted; tokens inside it never do, nor
        does a trailing incomplete character that ``flush`` dropped.
        """
        out = []
        while self._released < len(self._ends):
            i = self._released
            end = self._ends[i]
            if end is None:
                break
            start = self._starts[i]
            if end > self.emitted and not (self.stopped and start < self.emitted):
                break
            out.append((i, start))
            self._released += 1
        return out
