"""Step and progress reporting held in a contextvar: library code reports, only the CLI decides to show it."""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tqdm import tqdm


@dataclass
class Reporter:
    """Prints steps and progress bars to stderr when ``enabled``; silent otherwise (tests, library use)."""

    enabled: bool = False
    verbose: bool = False
    bars: bool | None = None  # progress bars; default: only when stderr is a terminal (keeps CI logs clean)
    started: float = field(default_factory=time.monotonic)

    def step(self, message: str) -> None:
        if self.enabled:
            print(f"* {message}", file=sys.stderr, flush=True)

    def detail(self, message: str) -> None:
        if self.enabled and self.verbose:
            print(f"  {message}", file=sys.stderr, flush=True)

    def bar(self, total: float | None, desc: str, unit: str = "it", unit_scale: bool = False) -> tqdm:
        return tqdm(
            total=total,
            desc=f"  {desc}",
            unit=unit,
            unit_scale=unit_scale,
            unit_divisor=1024 if unit == "B" else 1000,
            disable=not self.enabled or not (sys.stderr.isatty() if self.bars is None else self.bars),
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )


_SILENT = Reporter()
_current: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("webbuild_reporter", default=None)


def reporter() -> Reporter:
    return _current.get() or _SILENT


@contextlib.contextmanager
def reporting(rep: Reporter) -> Iterator[Reporter]:
    token = _current.set(rep)
    try:
        yield rep
    finally:
        _current.reset(token)


def step(message: str) -> None:
    reporter().step(message)


def detail(message: str) -> None:
    reporter().detail(message)


def bar(total: float | None, desc: str, unit: str = "it", unit_scale: bool = False) -> tqdm:
    return reporter().bar(total, desc, unit, unit_scale)


@contextlib.contextmanager
def timed(message: str) -> Iterator[None]:
    """Reports a step, then its duration when done."""
    rep = reporter()
    rep.step(message)
    t0 = time.monotonic()
    yield
    rep.detail(f"done in {time.monotonic() - t0:.1f}s")
