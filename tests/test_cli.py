"""The CLI's contract: clear one-line errors with a tip and the right exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_llama import tiny_llama_model, write_gguf, write_hf_dir

from webbuild.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("package", "serve", "doctor", "bench"):
        assert command in out


def test_package_help_documents_the_quantizations(capsys):
    with pytest.raises(SystemExit):
        main(["package", "--help"])
    out = capsys.readouterr().out
    assert "q4f32_1" in out and "q4f16_1" in out and "shader-f16" in out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["package"])
    assert exit_.value.code == 2


def test_unknown_preset_lists_the_known_ones(capsys):
    code, _, err = run(capsys, "package", "no-such-model")
    assert code == 1
    assert "smollm2-135m-instruct" in err and "Traceback" not in err


def test_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "package", str(tmp_path / "absent.gguf"))
    assert code == 1
    assert "absent.gguf" in err


def test_unknown_quantization_names_the_valid_ones(capsys, tmp_path):
    hf = write_hf_dir(tmp_path / "hf", tiny_llama_model())
    code, _, err = run(capsys, "package", str(hf), "-q", "q3f8")
    assert code == 1
    assert "q4f32_1" in err and "q3f8" in err


def test_unsupported_architecture_names_the_supported_ones(capsys, tmp_path):
    path = write_gguf(tmp_path / "m.gguf", tiny_llama_model(), arch="mamba")
    code, _, err = run(capsys, "package", str(path))
    assert code == 1
    assert "mamba" in err and "llama" in err


def test_corrupt_gguf(capsys, tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    code, _, err = run(capsys, "package", str(path))
    assert code == 1
    assert "broken.gguf" in err and "Traceback" not in err


def test_missing_emcc_is_an_environment_error_and_leaves_no_site(capsys, tmp_path, monkeypatch, cache_home):
    hf = write_hf_dir(tmp_path / "hf", tiny_llama_model())
    monkeypatch.setenv("PATH", "/nonexistent")
    out = tmp_path / "site"
    code, _, err = run(capsys, "package", str(hf), "-o", str(out))
    assert code == 3
    assert "emcc" in err and "apt-get install emscripten" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary build folders were left behind"


def test_missing_chromium_is_an_environment_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBBUILD_CHROMIUM", str(tmp_path / "no-chromium"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html>")
    code, _, err = run(capsys, "bench", str(site), "--engines", "browser")
    assert code == 3
    assert "chromium" in err.lower()


def test_bench_names_its_engines(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["bench", str(tmp_path), "--engines", "cpu,gpu"])
    assert info.value.code == 2
    assert "choose among cpu, cuda, browser" in capsys.readouterr().err


def test_serve_refuses_a_folder_that_is_not_a_site(capsys, tmp_path: Path):
    code, _, err = run(capsys, "serve", str(tmp_path))
    assert code == 1
    assert "webbuild package" in err
