"""Where the files webbuild ships beside its code are: presets, the site template and the built browser runtime.

They live in the repository's top-level folders ``models/``, ``site_template/`` and ``web_runtime/dist/runtime/``
(written by ``npm run build:site``). ``webbuild/build/data/`` holds relative symlinks to them, so one path works
everywhere: a checkout (the editable install) reads the folders in place, and building a wheel follows the links
and stores copies at the same path (pyproject's package-data), so an installed webbuild needs no checkout.
"""

from __future__ import annotations

from pathlib import Path

from webbuild.errors import ToolchainError

DATA_DIR = Path(__file__).resolve().parent / "data"
PRESETS_DIR = DATA_DIR / "models"
TEMPLATE_DIR = DATA_DIR / "site_template"
RUNTIME_DIR = DATA_DIR / "runtime"

# What the site's page and its users load first; the rest (modules, vendor/) is whatever the runtime build wrote.
RUNTIME_ENTRY_POINTS = ("index.js", "worker.js")
RUNTIME_TIP = (
    "build it: cd web_runtime && npm ci && npm run build:site (scripts/setup.sh does both); "
    "a wheel carries the runtime only when it is built after that"
)


def require_runtime(runtime_dir: Path | None = None) -> Path:
    """``runtime_dir`` (default RUNTIME_DIR) when it holds a built browser runtime; otherwise a ToolchainError
    naming the build command. ``webbuild package`` calls it before the long steps, so a missing runtime fails in a
    second, not at the end.
    """
    runtime_dir = runtime_dir or RUNTIME_DIR
    missing = [name for name in RUNTIME_ENTRY_POINTS if not (runtime_dir / name).is_file()]
    if not (runtime_dir / "vendor").is_dir():
        missing.append("vendor/")
    if missing:
        raise ToolchainError(
            f"The browser runtime is not built: {runtime_dir.resolve()} lacks {', '.join(missing)}.", tip=RUNTIME_TIP
        )
    edited = _sources_newer_than(runtime_dir)
    if edited:
        raise ToolchainError(
            f"The browser runtime in {runtime_dir.resolve()} is older than its sources ({', '.join(edited)}): "
            "a site would ship the old code.",
            tip="rebuild it: cd web_runtime && npm run build:site (scripts/setup.sh does it too)",
        )
    return runtime_dir


def _sources_newer_than(runtime_dir: Path) -> list[str]:
    """In a checkout the runtime is built from ``web_runtime/src``, beside ``dist/runtime``: the sources edited
    since the build. An installed webbuild has no sources beside its copy, so nothing is stale there."""
    sources = runtime_dir.resolve().parent.parent / "src"
    if not sources.is_dir():
        return []
    built = min(f.stat().st_mtime for f in runtime_dir.glob("*.js"))
    return sorted(f.name for f in sources.glob("*.js") if f.stat().st_mtime > built)
