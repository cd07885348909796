"""The CLI's contract: clear one-line errors with a tip and the right exit code, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from tiny_llama import tiny_llama_model, write_gguf, write_hf_dir

from webbuild.cli import main

QUANTIZATIONS = ("q4f32_m", "q4f16_m", "q8f32_s", "q8f16_s", "q4f16_1", "q4f32_1", "q0f16", "q0f32")
EMBEDDING_CHOICES = ("q4", "q4m", "q8", "float")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def exit_code_and_stderr(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int | str | None, str]:
    """``main``'s exit code whether it returns one or argparse exits with it, and what it wrote to stderr."""
    try:
        code: int | str | None = main(["--quiet", *args])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def fake_site(path: Path) -> Path:
    """A folder that passes the CLI's "is this a site" check (a page and a manifest, not read before work)."""
    path.mkdir(parents=True)
    (path / "index.html").write_text("<!doctype html>")
    (path / "manifest.json").write_text("{}")
    return path


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
    assert all(name in out for name in QUANTIZATIONS) and "shader-f16" in out and "--embeddings" in out


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
    site = fake_site(tmp_path / "site")
    code, _, err = run(capsys, "bench", str(site), "--engines", "browser")
    assert code == 3
    assert "chromium" in err.lower()


def test_serve_refuses_a_folder_that_is_not_a_site(capsys, tmp_path: Path):
    code, _, err = run(capsys, "serve", str(tmp_path))
    assert code == 1
    assert "webbuild package" in err


# --- option values are checked before any loading -----------------------------------------------------------

# Each: arguments ("MODEL" an existing model folder, "SITE" a site folder), then what the message must say.
# Malformed values are usage errors: exit 2 from argparse, naming the option and the accepted values.
USAGE_ERRORS = [
    (["package", "MODEL", "-q", "q8"], ["-q/--quantization", "'q8'", *QUANTIZATIONS]),
    (["package", "MODEL", "--embeddings", "q3"], ["--embeddings", "'q3'", *EMBEDDING_CHOICES]),
    (["package", "MODEL", "--context-window-size", "-5"], ["--context-window-size", "integer of at least 1", "'-5'"]),
    (["package", "MODEL", "--prefill-chunk-size", "0"], ["--prefill-chunk-size", "integer of at least 1"]),
    (["package", "MODEL", "--prefill-chunk-size", "lots"], ["--prefill-chunk-size", "'lots'"]),
    (["serve", "MODEL", "--port", "70000"], ["--port", "integer from 1 to 65535"]),
    (["serve", "MODEL", "--device", "tpu"], ["--device", "'tpu'", "'cpu', 'cuda'"]),
    (["serve", "MODEL", "--mode", "fast"], ["--mode", "'local', 'interactive', 'server'"]),
    (["serve", "MODEL", "-q", "q8"], ["-q/--quantization", *QUANTIZATIONS]),
    (
        ["serve", "MODEL", "--allow-origins", "https://a.example,https://b.example/"],
        ["--allow-origins", "'https://b.example/'", "scheme://host[:port]"],
    ),
    (["serve", "MODEL", "--allow-origins", "b.example"], ["--allow-origins", "'b.example'", "'*'"]),
    (["chat", "MODEL", "--device", "tpu"], ["--device", "'tpu'"]),
    (["chat", "MODEL", "-q", "q8"], ["-q/--quantization", *QUANTIZATIONS]),
    (["bench", "SITE", "--engines", "cpu,gpu"], ["--engines", "choose among cpu, cuda, browser"]),
    (["bench", "SITE", "--engines", ","], ["--engines", "choose among cpu, cuda, browser"]),
    (["bench", "SITE", "--max-tokens", "0"], ["--max-tokens", "integer of at least 1"]),
    (["verify", "SITE", "--reference", "cpu,tpu"], ["--reference", "choose among cpu, cuda, hf"]),
    (["verify", "SITE", "--tokens", "0"], ["--tokens", "integer of at least 1"]),
    (["verify", "SITE", "-q", "q8"], ["-q/--quantization", *QUANTIZATIONS]),
    (["verify", "SITE", "--min-top1", "150"], ["--min-top1", "number from 0 to 100"]),
    (["verify", "SITE", "--max-kl", "-1"], ["--max-kl", "number of at least 0"]),
    (["verify", "SITE", "--max-abs-logit", "nan"], ["--max-abs-logit", "'nan'"]),
    (["verify", "SITE", "--timeout", "0"], ["--timeout", "number above 0"]),
]
# What a value names (a file, a model, a site) and the chat's sampling ranges are the tool's errors: exit 1, with
# the error/tip lines every other failure uses.
INPUT_ERRORS = [
    (["package", "absent.gguf"], ["absent.gguf", "smollm2-135m-instruct", "tip: "]),
    (["serve", "absent.gguf"], ["absent.gguf", "smollm2-135m-instruct", "`webbuild package`"]),
    (["bench", "MODEL"], ["is not a built site", "tip: Build one with `webbuild package"]),
    (["verify", "MODEL"], ["is not a built site", "tip: Build one with `webbuild package"]),
    (["verify", "SITE", "--prompts", "absent.txt"], ["--prompts", "absent.txt"]),
    (["verify", "SITE", "--source", "absent.gguf"], ["absent.gguf", "smollm2-135m-instruct"]),
    (["chat", "MODEL", "--temperature", "5"], ["temperature must be between 0 and 2"]),
    (["chat", "MODEL", "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e"], ["at most 4"]),
]


def with_paths(args: list[str], root: Path) -> list[str]:
    """``args`` with MODEL and SITE made real folders under ``root``, and other names pointing inside it."""
    model, site = root / "model", root / "site"
    if not model.exists():
        model.mkdir()
        fake_site(site)
    named = {"MODEL": str(model), "SITE": str(site)}
    return [named.get(a, str(root / a) if a.startswith("absent") else a) for a in args]


@pytest.mark.parametrize(("args", "says"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_a_malformed_value_is_a_usage_error_naming_the_option(capsys, tmp_path, args, says):
    code, err = exit_code_and_stderr(capsys, with_paths(args, tmp_path))
    assert code == 2
    assert f"webbuild {args[0]}: error: argument" in err
    for text in says:
        assert text in err


@pytest.mark.parametrize(("args", "says"), INPUT_ERRORS, ids=[" ".join(a) for a, _ in INPUT_ERRORS])
def test_what_a_value_names_is_checked_before_work(capsys, tmp_path, args, says):
    code, err = exit_code_and_stderr(capsys, with_paths(args, tmp_path))
    assert code == 1
    assert err.startswith("error: ") and "Traceback" not in err
    for text in says:
        assert text in err


CHECK_IN_A_FRESH_PROCESS = """
import json, sys
from webbuild.cli import main
codes = []
for args in json.loads(sys.argv[1]):
    try:
        codes.append(main(["--quiet", *args]))
    except SystemExit as exit_:
        codes.append(exit_.code)
print(json.dumps({"codes": codes, "tvm imported": "tvm" in sys.modules}))
"""


def test_bad_values_fail_without_importing_tvm(tmp_path):
    """Importing TVM takes seconds: a typo must not wait for it (`webbuild package <preset> -q q8` once loaded
    the model for 16 s before saying no)."""
    cases = [*USAGE_ERRORS, *INPUT_ERRORS, (["package", "smollm2-135m-instruct", "-q", "q8"], [])]
    argv = [with_paths(args, tmp_path) for args, _ in cases]
    child = subprocess.run(
        [sys.executable, "-c", CHECK_IN_A_FRESH_PROCESS, json.dumps(argv)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.splitlines()[-1])
    assert result == {"codes": [2] * len(USAGE_ERRORS) + [1] * len(INPUT_ERRORS) + [2], "tvm imported": False}


def test_a_repeated_quantization_builds_once(capsys, tmp_path, monkeypatch):
    import webbuild.commands.package as command
    from webbuild.errors import InputError

    asked: list[list[str]] = []

    def package(opts: command.PackageOptions) -> command.PackageResult:
        asked.append(opts.quantizations)
        raise InputError("stop before the work")

    monkeypatch.setattr(command, "package", package)
    code, _, _ = run(capsys, "package", str(tmp_path), "-q", "q0f32", "-q", "q4f16_1", "-q", "q0f32")
    assert code == 1 and asked == [["q0f32", "q4f16_1"]]


# --- --version ------------------------------------------------------------------------------------------------


def version_output(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_version_is_the_installed_distributions(capsys):
    (dist,) = set(metadata.packages_distributions()["webbuild"])  # whatever it is named on PyPI
    assert version_output(capsys) == f"webbuild {metadata.version(dist)}\n"


def test_version_of_a_tree_that_is_not_installed_says_unknown(capsys, monkeypatch):
    monkeypatch.setattr(metadata, "packages_distributions", dict)
    assert version_output(capsys) == "webbuild 0+unknown\n"


# --- TVM's own output stays off the terminal --------------------------------------------------------------------

TVM_LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ", re.M)  # e.g. [06:30:57] .../transform.h:1261: Warning: ...


@pytest.mark.toolchain
def test_package_shows_steps_but_not_tvms_warnings(capfd, tmp_path, monkeypatch):
    from webbuild.build.link import build_runtime

    # An empty library cache, so the model compiles here; TVM's wasm runtime is reused (~2 min to build once).
    runtime = build_runtime()[0].parent
    cache = tmp_path / "cache"
    (cache / "wasm-runtime").mkdir(parents=True)
    (cache / "wasm-runtime" / runtime.name).symlink_to(runtime)
    monkeypatch.setenv("WEBBUILD_CACHE", str(cache))
    hf = write_hf_dir(tmp_path / "hf", tiny_llama_model())
    capfd.readouterr()

    code = main(["package", str(hf), "-o", str(tmp_path / "site"), "-q", "q0f32", "--context-window-size", "64"])
    out, err = capfd.readouterr()  # file descriptors 1 and 2: what a terminal would show
    assert code == 0, err
    assert "* compiling llama q0f32 for webgpu" in err and "built " in out
    assert not TVM_LOG_LINE.search(err) and not TVM_LOG_LINE.search(out)
    assert "Fast mode" not in err + out


def test_a_cache_that_cannot_be_created_is_named_with_what_to_do(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("WEBBUILD_CACHE", str(blocker / "cache"))
    hf = write_hf_dir(tmp_path / "hf", tiny_llama_model())
    code, _, err = run(capsys, "chat", str(hf), "-q", "q0f32")
    assert code == 1
    assert f"error: {blocker / 'cache'}: Not a directory" in err
    assert "tip:" in err and "WEBBUILD_CACHE" in err and "internal error" not in err


@pytest.mark.parametrize(
    ("errno_", "says"), [(30, "read-only file system"), (13, "write permission"), (28, "its disk is full")]
)
def test_a_filesystem_error_names_its_path_and_what_to_do_not_an_internal_error(
    capsys, monkeypatch, tmp_path, errno_: int, says: str
):
    import os

    target = tmp_path / "somewhere" / "file.json"

    def doctor(**kwargs):
        raise OSError(errno_, os.strerror(errno_), str(target))

    monkeypatch.setattr("webbuild.commands.doctor.doctor", doctor)
    code, _, err = run(capsys, "doctor")
    assert code == 1
    assert err.startswith(f"error: {target}: {os.strerror(errno_)}.")
    assert says in err.lower() and "internal error" not in err
