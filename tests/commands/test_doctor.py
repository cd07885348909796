"""webbuild doctor: one check per tool, failures carry the fix, and nothing a check hits crashes the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from webbuild import browser
from webbuild.build import link, resources
from webbuild.commands import doctor as doctor_mod
from webbuild.commands.doctor import Check, doctor, format_report
from webbuild.errors import ToolchainError

NAMES = ["python", "tvm", "emcc", "wasm runtime", "node", "npm", "browser runtime", "playwright", "chromium"]


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_report_lists_every_check_with_fixes_under_failures() -> None:
    checks = [
        Check("python", True, "3.11.2"),
        Check("emcc", False, "emscripten (emcc) is not installed", "sudo apt-get install emscripten"),
        Check("wasm runtime", True, "not built yet", "webbuild doctor --build-runtime"),
    ]
    lines = format_report(checks).splitlines()
    assert lines[0] == "webbuild doctor"
    assert lines[1].split() == ["ok", "python", "3.11.2"]
    assert lines[2].startswith("  !!  emcc ")
    assert lines[3].strip() == "fix: sudo apt-get install emscripten"
    assert lines[5].strip() == "tip: webbuild doctor --build-runtime"  # a suggestion on a passing check
    assert lines[-1] == "1 of 3 checks need attention"
    assert format_report([Check("python", True, "3.11")]).splitlines()[-1] == "all 1 checks passed"


def test_report_fits_one_screen() -> None:
    report = format_report([Check(n, False, "x" * 60, "y" * 60) for n in NAMES + ["webgpu"]])
    assert len(report.splitlines()) <= 24


def test_checks_come_in_a_fixed_order_without_the_browser_probe() -> None:
    assert [c.name for c in doctor(probe_browser=False)] == NAMES


def test_missing_emcc_fails_its_check_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "emcc" else real_which(name))
    checks = by_name(doctor(probe_browser=False))
    assert not checks["emcc"].ok
    assert checks["emcc"].fix is not None and "apt-get install emscripten" in checks["emcc"].fix
    # Without emcc the runtime cannot be looked up; that is reported, not raised.
    assert checks["wasm runtime"].detail == "not built yet"
    assert checks["python"].ok


def test_runtime_not_built_yet_is_a_suggestion_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link, "cached_runtime", lambda: None)
    check = by_name(doctor(probe_browser=False))["wasm runtime"]
    assert check.ok and check.fix == doctor_mod.BUILD_RUNTIME_TIP


def test_build_runtime_flag_builds_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    built: list[bool] = []
    (tmp_path / "wasm_runtime.o").write_bytes(b"\0" * 2048)
    monkeypatch.setattr(link, "build_runtime", lambda: built.append(True) or [tmp_path / "wasm_runtime.o"])
    monkeypatch.setattr(link, "cached_runtime", lambda: tmp_path if built else None)
    check = by_name(doctor(build_runtime=True, probe_browser=False))["wasm runtime"]
    assert built == [True]
    assert check.ok and str(tmp_path) in check.detail and check.fix is None


def test_missing_node_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name in ("node", "npm") else real_which(name))
    checks = by_name(doctor(probe_browser=False))
    assert not checks["node"].ok and not checks["npm"].ok
    assert checks["node"].fix == doctor_mod.NODE_TIP


def test_an_unbuilt_browser_runtime_fails_with_the_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "RUNTIME_DIR", tmp_path / "runtime")
    check = by_name(doctor(probe_browser=False))["browser runtime"]
    assert not check.ok
    assert "lacks index.js, worker.js, vendor/" in check.detail
    assert check.fix == resources.RUNTIME_TIP


def test_a_built_browser_runtime_passes_with_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "runtime"
    (runtime / "vendor").mkdir(parents=True)
    for name in ("index.js", "worker.js", "vendor/tvmjs.js"):
        (runtime / name).write_text("export {};\n")
    monkeypatch.setattr(resources, "RUNTIME_DIR", runtime)
    check = by_name(doctor(probe_browser=False))["browser runtime"]
    assert check.ok and check.detail == f"built (3 files in {runtime})"


def test_missing_chromium_skips_the_webgpu_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_chromium() -> Path:
        raise ToolchainError("Chromium is not installed", tip=browser.CHROMIUM_TIP)

    probed: list[bool] = []
    monkeypatch.setattr(browser, "find_chromium", no_chromium)
    monkeypatch.setattr(browser, "probe_webgpu", lambda **kw: probed.append(True) or {})
    checks = by_name(doctor())
    assert not checks["chromium"].ok and checks["chromium"].fix == browser.CHROMIUM_TIP
    assert not checks["webgpu"].ok and "skipped" in checks["webgpu"].detail
    assert probed == []


def test_webgpu_check_reports_the_adapter_and_f16(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = {"available": True, "vendor": "google", "architecture": "swiftshader", "is_fallback": True}
    monkeypatch.setattr(browser, "chromium_version", lambda path=None: "Chromium 156")
    monkeypatch.setattr(browser, "find_chromium", lambda: Path("/usr/lib/chromium/chromium"))
    monkeypatch.setattr(browser, "probe_webgpu", lambda **kw: adapter | {"shader_f16": False})
    check = by_name(doctor())["webgpu"]
    assert check.ok and check.detail.startswith("google swiftshader (fallback), shader-f16: no")
    assert "q4f32_m" in check.detail
    monkeypatch.setattr(browser, "probe_webgpu", lambda **kw: {"available": False, "reason": "requestAdapter() null"})
    check = by_name(doctor())["webgpu"]
    assert not check.ok and "requestAdapter() null" in check.detail and check.fix


def test_a_crashing_check_becomes_a_failed_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> str:
        raise RuntimeError("emcc printed garbage")

    monkeypatch.setattr(link, "emcc_version", boom)
    check = by_name(doctor(probe_browser=False))["emcc"]
    assert not check.ok and check.detail == "RuntimeError: emcc printed garbage"


@pytest.mark.toolchain
def test_this_machine_is_ready() -> None:
    checks = doctor()
    assert [c.name for c in checks] == NAMES + ["webgpu"]
    assert all(c.ok for c in checks), format_report(checks)
