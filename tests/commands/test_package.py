"""``webbuild package``: what can be checked without the model fails before the model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_llama import tiny_llama_model, write_hf_dir

from webbuild.build import resources
from webbuild.commands import package as package_mod
from webbuild.commands.package import PackageOptions, package
from webbuild.errors import InputError, ToolchainError


def test_an_unbuilt_browser_runtime_fails_before_loading_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(resources, "RUNTIME_DIR", tmp_path / "unbuilt")
    monkeypatch.setattr(package_mod, "load_source", lambda spec: pytest.fail(f"loaded {spec} first"))
    with pytest.raises(ToolchainError, match="browser runtime is not built") as err:
        package(PackageOptions(str(tmp_path / "model.gguf")))
    assert "npm run build:site" in str(err.value.tip)


def test_an_output_folder_that_is_not_a_site_is_refused_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "my-files"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(package_mod, "build_library", lambda *a, **k: pytest.fail("compiled first"))
    with pytest.raises(InputError, match="is not a webbuild site"):
        package(PackageOptions(str(write_hf_dir(tmp_path / "hf", tiny_llama_model())), out=out))
    assert (out / "notes.txt").read_text() == "mine"
