"""webbuild.build.resources: one path to the shipped data folders, and a clear error for an unbuilt runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from webbuild.build import resources
from webbuild.errors import ToolchainError

REPO = Path(__file__).resolve().parents[2]


def test_in_a_checkout_the_data_paths_lead_to_the_top_level_folders() -> None:
    assert resources.PRESETS_DIR.resolve() == REPO / "models"
    assert resources.TEMPLATE_DIR.resolve() == REPO / "site_template"
    assert resources.RUNTIME_DIR.resolve() == REPO / "web_runtime" / "dist" / "runtime"


def test_an_unbuilt_runtime_names_what_it_lacks_and_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="lacks index.js, worker.js, vendor/") as err:
        resources.require_runtime(tmp_path)
    assert "npm run build:site" in str(err.value.tip)
    (tmp_path / "index.js").write_text("export {};\n")
    (tmp_path / "vendor").mkdir()
    with pytest.raises(ToolchainError, match="lacks worker.js\\.$"):
        resources.require_runtime(tmp_path)
    (tmp_path / "worker.js").write_text("export {};\n")
    assert resources.require_runtime(tmp_path) == tmp_path
