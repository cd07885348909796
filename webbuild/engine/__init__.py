"""The Python engine that ``serve``, ``chat``, ``verify`` and ``bench`` share.

request (the OpenAI request contract) and response (its response builders) -> engine (``Engine``) -> scheduler
(continuous batching) -> model_runner (one compiled library on one device), with sampling, text_stream and
chat_template beside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webbuild.engine.engine import Engine

__all__ = ["Engine"]


def __getattr__(name: str) -> object:
    # Importing TVM takes seconds: only users of the engine pay for it.
    if name == "Engine":
        from webbuild.engine.engine import Engine

        return Engine
    raise AttributeError(name)
