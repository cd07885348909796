"""``webbuild verify`` on the real SmolLM2 site (its preset's q4f32_m): the browser (SwiftShader WebGPU, ~1 token/s of
scoring) agrees with the CPU build of the same quantization. One short raw prompt keeps it to ~10 positions;
the failing case (weights altered after the build) runs on a tiny model in tests/test_verify.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.toolchain]


def test_verify_passes_against_the_cpu_build(smollm2_site: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"name": "capital", "text": "The capital of France is", "chat": False}]))
    html = tmp_path / "report.html"
    args = ["--prompts", prompts, "--tokens", "4", "--reference", "cpu,hf", "--json", "--html", html]
    # A process of its own, as a user runs it: Playwright's sync API cannot start inside the one pytest-playwright
    # keeps running for the browser tests of this session.
    cmd = [sys.executable, "-m", "webbuild.cli", "--quiet", "verify", str(smollm2_site), *map(str, args)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    code = run.returncode
    assert run.stdout, f"verify printed no report (exit {code}): {run.stderr}"
    report = json.loads(run.stdout)
    print(json.dumps(report["overall"], indent=1))  # the figures, in the test log
    assert code == 0, report["failures"]
    assert report["weights"]["differing"] == [] and report["weights"]["compared"] > 200
    ours = report["overall"]["browser vs cpu"]
    assert ours["top1_pct"] == 100.0
    assert ours["greedy"] == ours["greedy_of"] == 4
    assert report["prompts"][0]["continuation_tokens"] == 4
    assert "PASS" in html.read_text()
