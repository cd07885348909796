"""Finds and launches headless Chromium with WebGPU on, for verify, bench, doctor and the browser tests.

Debian's ``/usr/lib/chromium/chromium`` is launched directly (its ``/usr/bin/chromium`` wrapper prints a
harmless shell error). Without ``--enable-unsafe-webgpu`` headless Chromium returns no adapter; with it,
on a machine without a GPU, the adapter is SwiftShader (CPU), which lacks ``shader-f16``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webbuild.errors import ToolchainError

if TYPE_CHECKING:
    from webbuild.cdp import Chromium

ENV_VAR = "WEBBUILD_CHROMIUM"
# Extra flags, space-separated: e.g. "--enable-features=Vulkan" where a GPU's Vulkan driver should serve WebGPU.
FLAGS_ENV_VAR = "WEBBUILD_CHROMIUM_FLAGS"
DEFAULT_PATHS = ("/usr/lib/chromium/chromium",)
_PATH_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_TIP = f"sudo apt-get install chromium (or run scripts/setup.sh), or set {ENV_VAR}=/path/to/chrome"
PLAYWRIGHT_TIP = "pip install playwright (the browser itself comes from apt: chromium)"

# Every launch also gets a fresh profile: Playwright makes one itself; chromium_args() adds one when asked.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

# Limits worth reporting: what tvmjs asks for and what bounds the model's buffers and kernels.
_LIMITS = (
    "maxBufferSize",
    "maxStorageBufferBindingSize",
    "maxStorageBuffersPerShaderStage",
    "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX",
    "maxComputeWorkgroupsPerDimension",
)


@dataclass(frozen=True)
class BrowserChoice:
    """Which Chromium a command launches and the flags it adds (``--browser``, ``--browser-flag``): e.g.
    Debian's ``chromium-headless-shell`` with ``--use-angle=vulkan`` on a GPU machine. Unset, the environment
    variables decide, then the defaults."""

    executable: Path | None = None
    flags: tuple[str, ...] = ()


def find_chromium(executable: Path | None = None) -> Path:
    """The Chromium executable: ``executable`` if given, else ``$WEBBUILD_CHROMIUM``, else Debian's, else one
    on PATH."""
    named, where = (str(executable), "--browser") if executable else (os.environ.get(ENV_VAR), ENV_VAR)
    if named:
        path = Path(named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ToolchainError(f"{where}={named} is not an executable file", tip=CHROMIUM_TIP)
        return path
    for candidate in DEFAULT_PATHS:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    for name in _PATH_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ToolchainError("Chromium is not installed; it runs the WebGPU checks", tip=CHROMIUM_TIP)


def chromium_version(path: Path | None = None) -> str:
    """``chromium --version`` output, e.g. ``"Chromium 156.0.7559.58 built on Debian ..."``."""
    exe = path or find_chromium()
    try:
        proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(f"{exe} --version failed: {exc}", tip=CHROMIUM_TIP) from exc
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ToolchainError(f"{exe} --version failed: {proc.stderr.strip()[-300:]}", tip=CHROMIUM_TIP)
    return proc.stdout.strip().splitlines()[0]


def chromium_args(user_data_dir: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """Command-line flags for a headless WebGPU Chromium: ours, ``$WEBBUILD_CHROMIUM_FLAGS``, then ``extra``;
    pass a fresh ``user_data_dir`` when launching it yourself (Playwright refuses that flag and makes a fresh
    profile on its own)."""
    args = [*CHROMIUM_FLAGS, *os.environ.get(FLAGS_ENV_VAR, "").split(), *extra]
    if user_data_dir is not None:
        args.append(f"--user-data-dir={user_data_dir}")
    return args


def launch_options(choice: BrowserChoice = BrowserChoice()) -> dict[str, Any]:
    """Keyword arguments for Playwright's ``chromium.launch`` (and pytest-playwright's
    ``browser_type_launch_args`` fixture). ``headless`` stays False because the flags already ask for
    ``--headless=new``; Playwright's own headless switch would add its older flag set."""
    return {
        "executable_path": str(find_chromium(choice.executable)),
        "headless": False,
        "args": chromium_args(extra=choice.flags),
    }


def launch_chromium(choice: BrowserChoice = BrowserChoice()) -> Chromium:
    """Headless Chromium driven over the DevTools pipe (no Playwright): use it as a context manager."""
    from webbuild.cdp import Chromium

    # XDG_RUNTIME_DIR: without one, Chromium's GPU process on a bare machine logs errors and may give up Vulkan.
    env = {"XDG_RUNTIME_DIR": "/tmp"} | dict(os.environ)
    return Chromium(find_chromium(choice.executable), chromium_args(extra=choice.flags), env=env)


_PROBE_URL = "https://webbuild.invalid/probe.html"
_PROBE_PAGE = "<!doctype html><title>webbuild WebGPU probe</title>"

# Runs in the page: everything the probe reports, as plain JSON.
_PROBE_JS = """
async () => {
  if (!('gpu' in navigator)) return {available: false, reason: 'navigator.gpu is missing'};
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return {available: false, reason: 'requestAdapter() returned null'};
  const info = adapter.info || {};
  const limits = {};
  for (const key of LIMITS) limits[key] = adapter.limits[key];
  return {
    available: true,
    vendor: info.vendor || '',
    architecture: info.architecture || '',
    device: info.device || '',
    description: info.description || '',
    is_fallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    features: Array.from(adapter.features).sort(),
    limits,
  };
}
"""


def probe_webgpu(*, timeout_s: float = 60.0) -> dict[str, Any]:
    """Launches headless Chromium and reports its WebGPU adapter.

    Returns ``{"available", "vendor", "architecture", "device", "description", "is_fallback", "features",
    "shader_f16", "limits", "chromium", "browser_version"}``; when no adapter is found, ``available`` is
    False and ``reason`` says why. Raises ToolchainError when Chromium or Playwright is missing or the
    browser fails to start.
    """
    exe = find_chromium()
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ToolchainError("Playwright is not installed; it drives headless Chromium", tip=PLAYWRIGHT_TIP) from exc
    options = launch_options() | {"executable_path": str(exe), "timeout": timeout_s * 1000}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(**options)
            try:
                page = browser.new_page()
                page.set_default_timeout(timeout_s * 1000)
                # navigator.gpu exists only in secure contexts (not about:blank or data: URLs), so serve an
                # empty page at an https URL from Playwright's router: no server, no network.
                page.route(_PROBE_URL, lambda route: route.fulfill(body=_PROBE_PAGE, content_type="text/html"))
                page.goto(_PROBE_URL)
                result: dict[str, Any] = page.evaluate(_PROBE_JS.replace("LIMITS", repr(list(_LIMITS))))
                result["browser_version"] = browser.version
            finally:
                browser.close()
    except PlaywrightError as exc:
        # The first line says what failed; the browser's own stderr lines ("[pid=N][err] ...") say why.
        lines = [line.strip().removeprefix("- ") for line in str(exc).splitlines() if line.strip()]
        stderr = list(dict.fromkeys(line for line in lines if "[err]" in line))[:3]
        message = " | ".join(lines[:1] + stderr)[:600]
        raise ToolchainError(f"headless Chromium ({exe}) failed: {message}", tip=CHROMIUM_TIP) from exc
    result.setdefault("features", [])
    result["shader_f16"] = "shader-f16" in result["features"]
    result["chromium"] = str(exe)
    return result


def describe_adapter(info: dict[str, Any]) -> str:
    """One line for humans: ``google swiftshader (fallback), shader-f16: no``."""
    if not info.get("available"):
        return f"no WebGPU adapter ({info.get('reason', 'unknown reason')})"
    name = " ".join(x for x in (info.get("vendor"), info.get("architecture"), info.get("device")) if x) or "unnamed"
    fallback = " (fallback)" if info.get("is_fallback") else ""
    return f"{name}{fallback}, shader-f16: {'yes' if info.get('shader_f16') else 'no'}"
