"""webbuild.browser: finding Chromium, the headless WebGPU flags, and the adapter probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from webbuild import browser
from webbuild.browser import (
    BrowserChoice,
    chromium_args,
    describe_adapter,
    find_chromium,
    launch_chromium,
    launch_options,
    probe_webgpu,
)
from webbuild.errors import ToolchainError


def executable(path: Path, script: str = "exit 0\n") -> Path:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


@pytest.fixture
def no_chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where no Chromium is installed anywhere."""
    monkeypatch.delenv(browser.ENV_VAR, raising=False)
    monkeypatch.setattr(browser, "DEFAULT_PATHS", ())
    monkeypatch.setattr(shutil, "which", lambda name: None)


def test_env_var_overrides_the_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chrome = executable(tmp_path / "my-chrome")
    monkeypatch.setenv(browser.ENV_VAR, str(chrome))
    assert find_chromium() == chrome


def test_env_var_naming_a_missing_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(browser.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ToolchainError, match=browser.ENV_VAR):
        find_chromium()


def test_an_executable_named_on_the_command_line_beats_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(browser.ENV_VAR, str(executable(tmp_path / "env-chrome")))
    shell = executable(tmp_path / "chromium-headless-shell")
    assert find_chromium(shell) == shell
    with pytest.raises(ToolchainError, match="--browser"):
        find_chromium(tmp_path / "absent")


def test_debian_path_is_used_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chrome = executable(tmp_path / "chromium")
    monkeypatch.delenv(browser.ENV_VAR, raising=False)
    monkeypatch.setattr(browser, "DEFAULT_PATHS", (str(tmp_path / "absent"), str(chrome)))
    assert find_chromium() == chrome


@pytest.mark.usefixtures("no_chromium")
def test_missing_chromium_is_a_toolchain_error_with_the_install_command() -> None:
    with pytest.raises(ToolchainError) as err:
        find_chromium()
    assert err.value.tip is not None and "apt-get install chromium" in err.value.tip
    assert err.value.exit_code == 3


@pytest.mark.usefixtures("no_chromium")
def test_probe_without_chromium_raises_before_launching() -> None:
    with pytest.raises(ToolchainError):
        probe_webgpu()


def test_flags_turn_webgpu_on_in_new_headless_mode(tmp_path: Path) -> None:
    args = chromium_args(tmp_path / "profile")
    for flag in ("--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking"):
        assert flag in args
    assert args[-1] == f"--user-data-dir={tmp_path / 'profile'}"
    assert not any(a.startswith("--user-data-dir") for a in chromium_args())


def test_extra_flags_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBBUILD_CHROMIUM_FLAGS", "--enable-features=Vulkan  --ignore-gpu-blocklist")
    assert chromium_args()[-2:] == ["--enable-features=Vulkan", "--ignore-gpu-blocklist"]


def test_flags_of_a_choice_come_after_the_environment_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBBUILD_CHROMIUM_FLAGS", "--enable-features=Vulkan")
    vulkan = ("--use-angle=vulkan", "--disable-vulkan-surface")
    assert chromium_args(extra=vulkan)[-3:] == ["--enable-features=Vulkan", *vulkan]
    shell = executable(tmp_path / "chromium-headless-shell")
    options = launch_options(BrowserChoice(shell, vulkan))
    assert options["executable_path"] == str(shell) and options["args"][-2:] == list(vulkan)


def test_launch_options_suit_playwright(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chrome = executable(tmp_path / "chromium")
    monkeypatch.setenv(browser.ENV_VAR, str(chrome))
    options = launch_options()
    assert options["executable_path"] == str(chrome)
    # Our flags carry --headless=new; Playwright's own headless switch would add its older flag set.
    assert options["headless"] is False
    assert "--enable-unsafe-webgpu" in options["args"]
    assert not any(a.startswith("--user-data-dir") for a in options["args"])  # Playwright refuses it


def test_describe_adapter() -> None:
    info = {"available": True, "vendor": "google", "architecture": "swiftshader", "is_fallback": True}
    assert describe_adapter(info | {"shader_f16": False}) == "google swiftshader (fallback), shader-f16: no"
    assert describe_adapter({"available": True, "vendor": "nvidia", "shader_f16": True}) == "nvidia, shader-f16: yes"
    assert describe_adapter({"available": False, "reason": "requestAdapter() returned null"}) == (
        "no WebGPU adapter (requestAdapter() returned null)"
    )


@pytest.mark.toolchain
def test_chromium_version() -> None:
    assert browser.chromium_version().startswith(("Chromium", "Google Chrome"))


@pytest.mark.toolchain
def test_probe_finds_a_webgpu_adapter_in_headless_chromium() -> None:
    info = probe_webgpu()
    assert info["available"] is True, info
    assert isinstance(info["shader_f16"], bool)
    assert info["shader_f16"] == ("shader-f16" in info["features"])
    # What tvmjs needs from the device (ARTIFACTS.md): 32 KiB workgroup storage, 10 storage buffers.
    assert info["limits"]["maxComputeWorkgroupStorageSize"] >= 32768
    assert info["limits"]["maxStorageBuffersPerShaderStage"] >= 10
    assert info["limits"]["maxStorageBufferBindingSize"] >= 128 << 20
    assert info["chromium"] == str(find_chromium())
    assert info["browser_version"]


@pytest.mark.toolchain
def test_launch_chromium_opens_a_secure_page_with_webgpu(file_server) -> None:
    (file_server.root / "page.html").write_text("<title>probe</title>")
    with launch_chromium() as chromium:
        page = chromium.open(file_server.url("page.html"))
        page.wait_for("document.readyState === 'complete'", timeout_s=30)
        assert page.evaluate("document.title") == "probe"
        # 127.0.0.1 is a secure context, so the page sees WebGPU and gets an adapter.
        assert page.evaluate("navigator.gpu.requestAdapter().then((a) => a !== null)") is True


@pytest.mark.toolchain
def test_a_browser_that_fails_to_start_is_a_toolchain_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(browser.ENV_VAR, str(executable(tmp_path / "broken-chrome", "echo crashed >&2; exit 1\n")))
    with pytest.raises(ToolchainError, match="broken-chrome"):
        probe_webgpu(timeout_s=20)
