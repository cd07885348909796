"""``webbuild bench``: one greedy chat reply through the browser and the Python engine, figures side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_llama import package_tiny_site

from webbuild.cli import main

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_tiny_site(tmp_path_factory.mktemp("bench"), seed=3)


def test_bench_reports_both_engines_and_names_the_adapter(tiny_site: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["--quiet", "bench", str(tiny_site), "--engines", "cpu,browser", "--max-tokens", "12", "--repeat", "2"]
    assert main([*args, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    cpu, browser = json.loads(out.read_text())
    # the browser's steps are sent before the token they read is (generation.js): the same greedy reply
    assert browser["reply"] == cpu["reply"] and len(cpu["reply"]) > 0
    assert f"greedy reply, browser against Python engine (cpu): the same ({len(cpu['reply'])} characters)" in table
    assert cpu["where"] == "Python engine (cpu)" and "Python engine (cpu)" in table
    assert browser["where"].startswith("browser (") and "unnamed" not in browser["where"]  # the adapter's name
    assert f"{browser['decode_tokens_per_s']:.1f}" in table
    for run in (cpu, browser):
        assert run["prompt_tokens"] > 0 and 0 < run["completion_tokens"] <= 12
        assert run["load_s"] > 0 and run["time_to_first_token_s"] > 0
        assert run["runs"] == 2 and len(run["decode_tokens_per_s_runs"]) == 2
        assert run["cached_tokens"] == 0  # each timed request prefills its whole prompt (no KV reuse)


def test_an_engine_that_fails_is_reported_beside_the_others_figures(tiny_site: Path, tmp_path: Path, capsys) -> None:
    not_a_browser = tmp_path / "chromium"
    not_a_browser.write_text("#!/bin/sh\necho 'no GPU here' >&2\nexit 1\n")
    not_a_browser.chmod(0o755)
    out = tmp_path / "bench.json"
    args = ["--quiet", "bench", str(tiny_site), "--engines", "cpu,browser", "--max-tokens", "2", "--repeat", "1"]
    assert main([*args, "--browser", str(not_a_browser), "--out", str(out)]) == 1
    table = capsys.readouterr().out
    cpu, browser = json.loads(out.read_text())
    assert cpu["where"] == "Python engine (cpu)" and cpu["decode_tokens_per_s"] > 0
    assert browser["where"] == "browser" and browser["error"]
    assert "Python engine (cpu)" in table and "browser: failed: " in table


def test_a_browser_that_is_not_there_fails_before_any_engine_runs(tiny_site: Path, tmp_path: Path, capsys) -> None:
    args = ["bench", str(tiny_site), "--engines", "cpu,browser", "--browser", str(tmp_path / "missing")]
    assert main(args) != 0
    assert "is not an executable file" in capsys.readouterr().err


# What a decode step of the 2-layer model launches on a fallback adapter (the unfolded decode_fallback: 9 a
# layer, RoPE and the K/V append inside the KV cache's split kernel, plus embedding, final norm, LM head and
# argmax); GPUs get the folded decode (test_fusion.py).
DECODE_DISPATCH_BUDGET = 22


def test_profile_counts_a_decode_steps_dispatches_within_budget(tiny_site: Path, capsys) -> None:
    args = ["--quiet", "bench", str(tiny_site), "--engines", "browser", "--max-tokens", "2", "--repeat", "1"]
    assert main([*args, "--profile", "--json"]) == 0
    (browser,) = json.loads(capsys.readouterr().out)
    profile = browser["profile"]
    assert profile["layers"] == 2 and profile["timestamps"] is True  # SwiftShader has timestamp-query
    shipped, _, replayed_at_once, through_vm, one_submit, cpu_sampling, tvmjs = profile["configurations"]
    assert shipped["name"] == "as shipped" and shipped["gpu_sampling"] and not cpu_sampling["gpu_sampling"]
    decode = shipped["decode"]
    assert 0 < decode["dispatches"] <= DECODE_DISPATCH_BUDGET
    # What each layer launches, and what a step launches once: embedding, final norm, LM head, argmax.
    assert decode["dispatches_outside_layers"] == 4
    assert decode["dispatches_per_layer"] * 2 + 4 == decode["dispatches"]
    assert decode["read_bytes"] == 4 and cpu_sampling["decode"]["read_bytes"] > 4  # a token id, not the logits
    # Of 16 decode steps (which cross one 16-token KV page boundary, a new recording's key), those after two
    # equal recordings of their key are replayed; every configuration chooses the same tokens.
    assert decode["steps_replayed"] >= 12 and decode["steps_replayed"] + decode["steps_recorded"] == decode["steps"]
    assert through_vm["decode"]["steps_replayed"] == 0
    assert all(c["decode"]["chosen"] == decode["chosen"] for c in profile["configurations"])
    assert replayed_at_once["decode"]["steps_replayed"] >= 12
    vm = through_vm["decode"]
    assert vm["bind_groups_made"] == 0 and vm["bind_groups_reused"] == vm["dispatches"] == decode["dispatches"]
    assert vm["uniform_writes_skipped"] > 0 and vm["passes"] < vm["dispatches"]
    assert tvmjs["decode"]["passes"] == tvmjs["decode"]["dispatches"] == tvmjs["decode"]["bind_groups_made"]
    assert decode["gpu_ms"] > 0 and sum(k["count"] for k in decode["kernels"]) == decode["dispatches"]
    assert one_submit["decode"]["dispatches"] == decode["dispatches"]
