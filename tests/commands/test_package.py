"""``webbuild package``: what can be checked without the model fails before the model is loaded."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from tiny_llama import tiny_llama_model, write_hf_dir

from webbuild.build import resources
from webbuild.commands import package as package_mod
from webbuild.commands.package import PackageOptions, package
from webbuild.errors import FileSystemError, InputError, ToolchainError


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


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "free some space"),  # a write names no file
        (OSError(errno.EROFS, "Read-only file system", "STAGING"), "read-only file system"),
        (OSError(errno.EACCES, "Permission denied", "STAGING"), "write permission"),
    ],
)
def test_a_site_folder_that_cannot_be_written_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: OSError, says: str
) -> None:
    out = tmp_path / "dist" / "tiny"

    def write_model_files(prepared, model_dir: Path) -> None:
        if failure.filename == "STAGING":
            failure.filename = str(model_dir)  # the staging folder beside the site
        raise failure

    monkeypatch.setattr(package_mod, "write_model_files", write_model_files)
    monkeypatch.setattr(package_mod, "build_library", lambda *a, **k: pytest.fail("compiled first"))
    with pytest.raises(FileSystemError) as err:
        package(PackageOptions(str(write_hf_dir(tmp_path / "hf", tiny_llama_model())), out=out))
    assert err.value.message.startswith(f"{out}: ")
    assert says in err.value.tip and "--out" in err.value.tip
    assert list(out.parent.iterdir()) == []  # no partial site, no staging folder left


def test_a_cache_that_cannot_be_written_is_left_to_the_cli_to_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An OSError naming a file outside the site's folder is not the site's: it keeps its own path."""
    cached = tmp_path / "cache" / "libs" / "x.so"

    def build_library(*args, **kwargs) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(cached))

    monkeypatch.setattr(package_mod, "build_library", build_library)
    with pytest.raises(OSError) as err:
        package(PackageOptions(str(write_hf_dir(tmp_path / "hf", tiny_llama_model())), out=tmp_path / "dist" / "t"))
    assert err.value.filename == str(cached)
