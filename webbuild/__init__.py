"""webbuild: compile a language model into a static WebGPU chat site, and serve and check it from Python."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webbuild.engine.engine import Engine

    __version__: str

__all__ = ["Engine"]


def _version() -> str:
    """The version of the installed distribution that holds this package, whatever it is named on PyPI;
    ``0+unknown`` for a source tree that is not installed, rather than a number that may be wrong."""
    from importlib import metadata

    for dist in metadata.packages_distributions().get(__name__, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "0+unknown"


def __getattr__(name: str) -> object:
    # Importing TVM takes seconds: only `webbuild.Engine` users pay for it, not `webbuild --help`.
    if name == "Engine":
        from webbuild.engine.engine import Engine

        return Engine
    # Finding the distribution scans every installed one (a quarter second): only when asked.
    if name == "__version__":
        return _version()
    raise AttributeError(name)
