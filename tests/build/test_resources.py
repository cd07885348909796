"""webbuild.build.resources: one path to the shipped data folders, and a clear error for an unbuilt runtime."""

from __future__ import annotations

import os
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


def test_in_a_checkout_a_runtime_older_than_its_sources_is_refused(tmp_path: Path) -> None:
    sources, runtime = tmp_path / "web_runtime" / "src", tmp_path / "web_runtime" / "dist" / "runtime"
    sources.mkdir(parents=True)
    (runtime / "vendor").mkdir(parents=True)
    for name in ("index.js", "worker.js", "engine.js"):
        (sources / name).write_text("export {};\n")
        (runtime / name).write_text("export {};\n")
    os.utime(sources / "engine.js", (0, 0))  # built after the sources were written
    os.utime(sources / "index.js", (0, 0))
    os.utime(sources / "worker.js", (0, 0))
    assert resources.require_runtime(runtime) == runtime
    os.utime(sources / "engine.js")  # edited after the build
    with pytest.raises(ToolchainError, match=r"older than its sources \(engine.js\)") as err:
        resources.require_runtime(runtime)
    assert "npm run build:site" in str(err.value.tip)
