"""webbuild: compile a language model into a static WebGPU chat site, and serve and check it from Python."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webbuild.engine.engine import Engine

__all__ = ["Engine"]


def __getattr__(name: str) -> object:
    # Importing TVM takes seconds: only `webbuild.Engine` users pay for it, not `webbuild --help`.
    if name == "Engine":
        from webbuild.engine.engine import Engine

        return Engine
    raise AttributeError(name)
