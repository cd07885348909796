"""``webbuild package``: what can be checked without the model fails before the model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from webbuild.build import resources
from webbuild.commands import package as package_mod
from webbuild.commands.package import PackageOptions, package
from webbuild.errors import ToolchainError


def test_an_unbuilt_browser_runtime_fails_before_loading_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(resources, "RUNTIME_DIR", tmp_path / "unbuilt")
    monkeypatch.setattr(package_mod, "load_source", lambda spec: pytest.fail(f"loaded {spec} first"))
    with pytest.raises(ToolchainError, match="browser runtime is not built") as err:
        package(PackageOptions(str(tmp_path / "model.gguf")))
    assert "npm run build:site" in str(err.value.tip)
