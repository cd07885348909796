"""Turns generated token ids into text deltas: whole UTF-8 characters only, stop strings never emitted."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextStream:
    """Feed token ids one at a time; ``push`` returns the text that is safe to show now.

    Text that might be the start of a stop string is held back until it is known not to be one.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already returned
        self.stopped = False

    def _text(self) -> str:
        return self.decode(self.ids)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._text()
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
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
