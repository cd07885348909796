"""Turns generated token ids into text deltas: whole UTF-8 characters only, stop strings never emitted."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    """Feed token ids one at a time; ``push`` returns the text that is safe to show now.

    Text that might be the start of a stop string is held back until it is known not to be one.
    ``released()`` says which tokens that text belongs to, so per-token data (logprobs) travels with it.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already returned
        self.stopped = False
        # Where each token's text starts and ends in the decoded text; None while it ends inside a UTF-8
        # character. Tokens that together make one character all span that whole character.
        self._starts: list[int] = []
        self._ends: list[int | None] = []
        self._released = 0  # tokens already handed out by released()

    def _text(self) -> str:
        return self.decode(self.ids)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        self._ends.append(None)
        text = self._text()
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        first = len(self._ends) - 1  # this token and those that waited for it
        while first > 0 and self._ends[first - 1] is None:
            first -= 1
        start = (self._ends[first - 1] or 0) if first else 0
        for i in range(first, len(self._ends)):
            self._starts.append(start)
            self._ends[i] = len(text)
        for s in self.stop:
            hit = text.find(s, max(0, self.emitted - len(s)))
            if hit != -1:
                self.stopped = True
                delta = text[self.emitted : hit]
                self.emitted = max(self.emitted, hit)
                return delta
        safe = len(text)
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        delta = text[self.emitted : safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return delta

    def flush(self) -> str:
        """Whatever was held back, once generation ended without a stop string."""
        if self.stopped:
            return ""
        text = self._text().rstrip("\ufffd")
        delta = text[self.emitted :]
        self.emitted = len(text)
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
