"""``webbuild bench``: one greedy chat reply through the browser and the Python engine, figures side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_llama import tiny_llama_model, write_hf_dir

from webbuild.cli import main

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from webbuild.commands.package import PackageOptions, package

    root = tmp_path_factory.mktemp("bench")
    source = write_hf_dir(root / "tiny-hf", tiny_llama_model(seed=3))
    options = PackageOptions(
        str(source), out=root / "site", quantizations=["q4f32_1"], context_window_size=128, prefill_chunk_size=16
    )
    return package(options).site


def test_bench_reports_both_engines_and_names_the_adapter(tiny_site: Path, capsys) -> None:
    assert main(["--quiet", "bench", str(tiny_site), "--engines", "cpu,browser", "--max-tokens", "4", "--json"]) == 0
    cpu, browser = json.loads(capsys.readouterr().out)
    assert cpu["where"] == "Python engine (cpu)"
    assert browser["where"].startswith("browser (") and "unnamed" not in browser["where"]  # the adapter's name
    for run in (cpu, browser):
        assert run["prompt_tokens"] > 0 and 0 < run["completion_tokens"] <= 4
        assert run["load_s"] > 0 and run["time_to_first_token_s"] > 0
