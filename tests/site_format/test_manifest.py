"""webbuild.site_format.manifest: the manifest document, its variants, and what counts as a site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webbuild.errors import CorruptFileError, InputError
from webbuild.site_format import FileRecord, Manifest, Variant, is_site, read_manifest, write_manifest

F16 = Variant("m-q4f16_1", "q4f16_1", True, 512, [FileRecord("models/m-q4f16_1/a.bin", 3, "ab" * 32)])
F32 = Variant("m-q4f32_1", "q4f32_1", False, 512, [FileRecord("libs/m-q4f32_1-webgpu.wasm", 8, "cd" * 32)])
PAGE = FileRecord("index.html", 10, "ef" * 32)


def site(tmp_path: Path, default: str = F16.id) -> Path:
    (tmp_path / "index.html").write_text("<!doctype html>")
    write_manifest(tmp_path, Manifest("m", "2026-12-02T00:00:00+00:00", default, [F16, F32], [PAGE]))
    return tmp_path


def test_a_written_manifest_reads_back_equal(tmp_path: Path) -> None:
    manifest = read_manifest(site(tmp_path))
    assert manifest == Manifest("m", "2026-12-02T00:00:00+00:00", F16.id, [F16, F32], [PAGE])
    assert list(manifest.all_files()) == [PAGE, *F16.files, *F32.files]


def test_the_document_names_each_variants_folder_and_library(tmp_path: Path) -> None:
    doc = json.loads((site(tmp_path) / "manifest.json").read_text())
    assert doc["format_version"] == 2
    assert doc["default_variant"] == "m-q4f16_1"
    assert doc["variants"][1]["model_url"] == "models/m-q4f32_1/"
    assert doc["variants"][1]["model_lib"] == "libs/m-q4f32_1-webgpu.wasm"


def test_a_variants_quantization_policy_reads_back_and_may_be_absent(tmp_path: Path) -> None:
    policy = {"linear": "q4m", "embedding": "q8", "head": "q8"}
    variant = Variant("m-q4f32_m", "q4f32_m", False, 512, quantization_policy=policy)
    write_manifest(tmp_path, Manifest("m", "2026-12-02T00:00:00+00:00", variant.id, [variant], [PAGE]))
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["variants"][0]["quantization_policy"] == policy
    assert read_manifest(tmp_path).variants == [variant]
    del doc["variants"][0]["quantization_policy"]  # written before the policy was recorded
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    assert read_manifest(tmp_path).variants[0].quantization_policy == {}


def test_a_variant_is_chosen_by_quantization_or_the_default(tmp_path: Path) -> None:
    manifest = read_manifest(site(tmp_path))
    assert manifest.variant() == F16
    assert manifest.variant("q4f32_1") == F32
    with pytest.raises(InputError, match="no q0f32 variant; it has q4f16_1, q4f32_1"):
        manifest.variant("q0f32")


def test_the_portable_variant_runs_without_shader_f16(tmp_path: Path) -> None:
    assert read_manifest(site(tmp_path, default=F16.id)).portable_variant() == F32
    assert read_manifest(site(tmp_path, default=F32.id)).portable_variant() == F32


def test_a_site_is_a_page_and_a_manifest(tmp_path: Path) -> None:
    assert not is_site(tmp_path)
    site(tmp_path)
    assert is_site(tmp_path)
    (tmp_path / "index.html").unlink()
    assert not is_site(tmp_path)


def test_a_folder_without_a_manifest_is_not_a_site(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a built site"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=1), "format version 1"),
        (lambda d: d.pop("variants"), "malformed"),
        (lambda d: d["variants"][0].update(context_window_size="many"), "malformed"),
        (lambda d: d.update(default_variant="other"), "default_variant names no listed variant"),
    ],
)
def test_an_old_or_damaged_manifest_is_refused_with_a_rebuild_tip(tmp_path: Path, edit, message: str) -> None:
    path = site(tmp_path) / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptFileError, match=message) as err:
        read_manifest(tmp_path)
    assert "webbuild package" in str(err.value.tip)


def test_a_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (site(tmp_path) / "manifest.json").write_text("{")
    with pytest.raises(CorruptFileError, match="not readable JSON"):
        read_manifest(tmp_path)
