"""``webbuild doctor``: is this machine ready to build and check sites? One check per tool, each with a fix.

Checks never raise: a broken tool becomes a failed check whose ``fix`` names the next action. ``fix`` may
also be set on a passing check as a suggestion (the wasm runtime is built lazily, for instance).
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from webbuild import browser
from webbuild.build import link, resources
from webbuild.errors import WebbuildError

NODE_TIP = "sudo apt-get install nodejs npm (or run scripts/setup.sh)"
TVM_TIP = "pip install apache-tvm==0.27.0.post1"
BUILD_RUNTIME_TIP = "webbuild doctor --build-runtime (or let the first `webbuild package` build it, ~2 min)"
MIN_NODE_MAJOR = 18


@dataclass
class Check:
    """One line of the report. ``fix`` is the command or action that makes a failed check pass."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None


def doctor(*, build_runtime: bool = False, probe_browser: bool = True) -> list[Check]:
    """Runs every check. ``build_runtime`` compiles TVM's wasm runtime now if it is not cached (minutes);
    ``probe_browser=False`` skips launching Chromium (the slowest check, a few seconds)."""
    checks = [
        _guard("python", _python),
        _guard("tvm", _tvm),
        _guard("emcc", _emcc),
        _guard("wasm runtime", lambda: _wasm_runtime(build_runtime)),
        _guard("node", _node),
        _guard("npm", _npm),
        _guard("browser runtime", _browser_runtime),
        _guard("playwright", _playwright),
        _guard("chromium", _chromium),
    ]
    if probe_browser:
        chromium_ok = checks[-1].ok
        checks.append(_guard("webgpu", _webgpu) if chromium_ok else Check("webgpu", False, "skipped: no Chromium"))
    return checks


def format_report(checks: list[Check]) -> str:
    """The report as text for a terminal: one line per check, fixes indented under failures."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"  {'ok' if c.ok else '!!'}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"      {'':<{width}}  {'fix' if not c.ok else 'tip'}: {c.fix}")
    failed = sum(not c.ok for c in checks)
    summary = f"all {len(checks)} checks passed" if not failed else f"{failed} of {len(checks)} checks need attention"
    return "\n".join(["webbuild doctor", *lines, summary])


# --- the checks -----------------------------------------------------------------------------------------


def _guard(name: str, check: Callable[[], Check]) -> Check:
    """Turns any error inside a check into a failed check, so one broken tool never hides the others."""
    try:
        return check()
    except WebbuildError as exc:
        return Check(name, False, exc.message.splitlines()[0], exc.tip)
    except Exception as exc:  # a check must not crash the report
        return Check(name, False, f"{type(exc).__name__}: {exc}".splitlines()[0])


def _version_of(cmd: list[str]) -> str | None:
    """First line of ``cmd``'s output, or None when the tool is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    out = (proc.stdout or proc.stderr).strip()
    return out.splitlines()[0] if proc.returncode == 0 and out else None


def _python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", ok, f"{platform.python_version()} ({sys.executable})", None if ok else "use Python 3.10+")


def _tvm() -> Check:
    try:
        import tvm
        from tvm.target import codegen
    except ImportError as exc:
        return Check("tvm", False, f"not importable: {exc}", TVM_TIP)
    llvm = codegen.llvm_version_major()
    wasm = "wasm32" in codegen.llvm_get_targets()
    detail = f"{tvm.__version__} (LLVM {llvm}, wasm32 backend {'yes' if wasm else 'MISSING'})"
    return Check("tvm", wasm, detail, None if wasm else TVM_TIP)


def _emcc() -> Check:
    path = link.find_emcc()
    return Check("emcc", True, f"{link.emcc_version()} ({path})")


def _wasm_runtime(build: bool) -> Check:
    if build:
        link.build_runtime()
    path = link.cached_runtime()
    if path is None:
        return Check("wasm runtime", True, "not built yet", BUILD_RUNTIME_TIP)
    size = sum(p.stat().st_size for p in path.glob("*.o"))
    return Check("wasm runtime", True, f"built ({size / 2**20:.1f} MiB of objects in {path})")


def _node() -> Check:
    version = _version_of(["node", "--version"])
    if version is None:
        return Check("node", False, "not found", NODE_TIP)
    major = int(version.lstrip("v").split(".")[0]) if version.lstrip("v")[:1].isdigit() else 0
    ok = major >= MIN_NODE_MAJOR
    return Check("node", ok, version, None if ok else f"Node {MIN_NODE_MAJOR}+ is needed: {NODE_TIP}")


def _npm() -> Check:
    version = _version_of(["npm", "--version"])
    return Check("npm", version is not None, version or "not found", None if version else NODE_TIP)


def _browser_runtime() -> Check:
    runtime = resources.require_runtime()
    count = sum(p.is_file() for p in runtime.rglob("*"))
    return Check("browser runtime", True, f"built ({count} files in {runtime.resolve()})")


def _playwright() -> Check:
    try:
        version = importlib.metadata.version("playwright")
    except importlib.metadata.PackageNotFoundError:
        return Check("playwright", False, "not installed", browser.PLAYWRIGHT_TIP)
    return Check("playwright", True, version)


def _chromium() -> Check:
    path = browser.find_chromium()
    return Check("chromium", True, f"{browser.chromium_version(path)} ({path})")


def _webgpu() -> Check:
    info = browser.probe_webgpu()
    if not info.get("available"):
        return Check(
            "webgpu",
            False,
            browser.describe_adapter(info),
            "headless Chromium needs --enable-unsafe-webgpu (webbuild.browser adds it); check the browser build",
        )
    detail = browser.describe_adapter(info)
    if not info.get("shader_f16"):
        detail += " (f16 models cannot run here: use an f32 build such as q4f32_m)"
    return Check("webgpu", True, detail)
