"""The wheel: built from the checkout and installed in a fresh venv, it packages a model from an empty folder.

The venv gets only the wheel; its dependencies (TVM and the rest, minutes to download) come from this test's
own environment through a .pth file, which adds that site-packages without running its .pth files, so the
checkout's editable install stays out and ``import webbuild`` can only find the wheel's copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from tiny_llama import tiny_llama_model, write_hf_dir

from webbuild.build.presets import preset_names
from webbuild.build.resources import RUNTIME_DIR

pytestmark = pytest.mark.toolchain

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Environments, caches and outputs of the checkout, which a fresh clone has none of (web_runtime/dist/ is the
# built runtime, an input: only the top-level dist/ and build/ are outputs).
NOT_SOURCES = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def _not_sources(directory: str, names: list[str]) -> set[str]:
    skip = NOT_SOURCES | ({"dist", "build"} if Path(directory) == REPO else set())
    return {n for n in names if n in skip or n.endswith(".egg-info")}


def run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # WEBBUILD_CACHE stays: compiles are reused
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of the checkout (a build in place would leave build/ behind)."""
    root = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, root / "src", symlinks=True, ignore=_not_sources)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root, root / "src")
    (built,) = root.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", wheel)
    return venv / "bin"


def test_the_wheel_carries_presets_template_and_the_built_runtime(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "webbuild/build/data/"
    assert {f"{data}models/{p}.toml" for p in preset_names()} <= names
    assert f"{data}site_template/index.html.j2" in names
    runtime = {p.relative_to(RUNTIME_DIR).as_posix() for p in RUNTIME_DIR.rglob("*") if p.is_file()}
    assert {"index.js", "worker.js", "vendor/tvmjs.js", "vendor/LICENSE.tvmjs.txt"} <= runtime
    assert {n.removeprefix(f"{data}runtime/") for n in names if n.startswith(f"{data}runtime/")} == runtime
    assert wheel.name.startswith(f"webbuild_llm-{PROJECT['version']}-")


def test_the_installed_command_runs_the_wheels_copy_and_lists_the_presets(venv_bin: Path, tmp_path: Path) -> None:
    where = run(venv_bin / "python", "-c", "import webbuild; print(webbuild.__file__)", cwd=tmp_path).stdout
    assert Path(where.strip()).is_relative_to(venv_bin.parent)
    help_text = " ".join(run(venv_bin / "webbuild", "package", "--help", cwd=tmp_path).stdout.split())
    assert preset_names() and f"a preset ({', '.join(preset_names())})" in help_text
    version = run(venv_bin / "webbuild", "--version", cwd=tmp_path).stdout
    assert version.split() == ["webbuild", PROJECT["version"]]


def test_the_installed_command_packages_a_model_from_an_empty_folder(venv_bin: Path, tmp_path: Path) -> None:
    model = write_hf_dir(tmp_path / "models" / "tiny-chat", tiny_llama_model(seed=3))
    work = tmp_path / "work"
    work.mkdir()
    args = ["-q", "q4f32_1", "--context-window-size", "128", "--prefill-chunk-size", "16"]
    run(venv_bin / "webbuild", "--quiet", "package", model, *args, cwd=work)
    site = work / "dist" / "tiny-chat"
    for path in ["index.html", "runtime/index.js", "runtime/worker.js", "runtime/vendor/tvmjs.js", "manifest.json"]:
        assert (site / path).is_file(), path
    assert {p.name for p in (site / "runtime" / "vendor").iterdir()} == {
        p.name for p in (RUNTIME_DIR / "vendor").iterdir()
    }
    manifest = json.loads((site / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert {"index.html", "runtime/index.js", "runtime/worker.js"} <= listed
    assert [v["id"] for v in manifest["variants"]] == ["tiny-chat-q4f32_1"]
