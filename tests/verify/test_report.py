"""webbuild.verify.report: the terminal table, JSON and HTML report of a verify run, built from synthetic logits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from webbuild.commands.verify import PromptResult, VerifyResult
from webbuild.verify.metrics import Thresholds, compare, summarize
from webbuild.verify.prompts import VerifyPrompt
from webbuild.verify.references import ReferenceStatus, WeightsCheck
from webbuild.verify.report import as_json, divergence_points, format_html, format_text, line_chart, write_html

VOCAB = 32
WORDS = [f"w{i}" for i in range(VOCAB)]


def make_result(*, diverge_at: int | None = None, nan: bool = False) -> VerifyResult:
    """Two prompts; the browser equals the CPU up to 1e-4 noise, except at ``diverge_at`` of the second one."""
    rng = np.random.default_rng(0)
    prompts = []
    for k, (name, n, prompt_len) in enumerate((("prose", 12, 7), ("code", 10, 4))):
        cpu = rng.standard_normal((n, VOCAB)).astype(np.float32) * 4
        browser = cpu + rng.standard_normal(cpu.shape).astype(np.float32) * 1e-4
        hf = cpu + rng.standard_normal(cpu.shape).astype(np.float32) * 0.3
        if k == 1 and diverge_at is not None:
            browser[diverge_at, cpu[diverge_at].argmax()] -= 20
        if k == 1 and nan:
            browser[2, 3] = np.nan
        tokens = [int(t) for t in rng.integers(0, VOCAB, prompt_len)] + [
            int(t) for t in cpu.argmax(-1)[prompt_len - 1 : -1]
        ]
        forced = tokens[prompt_len:]
        comparisons = {
            "browser vs cpu": compare(cpu, browser, prompt_len=prompt_len, continuation=forced),
            "browser vs hf": compare(hf, browser, prompt_len=prompt_len),
            "cpu vs hf": compare(hf, cpu, prompt_len=prompt_len),
        }
        prompts.append(
            PromptResult(VerifyPrompt(name, "text"), tokens, prompt_len, [WORDS[t] for t in tokens], comparisons)
        )
    overall = {key: summarize([p.comparisons[key] for p in prompts]) for key in prompts[0].comparisons}
    thresholds = Thresholds()
    failures = [f"browser vs cpu: {f}" for f in thresholds.failures(overall["browser vs cpu"])]
    return VerifyResult(
        site=Path("dist/tiny"),
        model_id="tiny-q4f32_1",
        quantization="q4f32_1",
        adapter={"vendor": "google", "architecture": "swiftshader", "isFallbackAdapter": True},
        references=[
            ReferenceStatus("cpu", "ok", "llvm build"),
            ReferenceStatus("cuda", "skipped", "no CUDA GPU visible to TVM"),
            ReferenceStatus("hf", "ok", "transformers"),
        ],
        weights=WeightsCheck(compared=23),
        prompts=prompts,
        overall=overall,
        thresholds=thresholds,
        failures=failures,
        seconds=12.0,
        token_text=lambda t: WORDS[t],
        gated=["browser vs cpu"],
    )


def test_a_passing_run_reads_as_tables_per_comparison_and_a_verdict() -> None:
    text = format_text(make_result())
    assert "google swiftshader (software fallback)" in text
    assert "cuda  skipped  no CUDA GPU visible to TVM" in text
    assert "weights: all 23 stored tensors equal" in text
    assert "browser vs cpu (same quantization: held to the thresholds)" in text
    assert "cpu vs hf (quantization loss" in text
    assert re.search(r"^\s+all\s+22\s+100\.00", text, re.M)
    assert text.rstrip().splitlines()[-1].startswith("PASS")


def test_a_failing_run_names_the_prompt_position_and_tokens_of_the_divergence() -> None:
    result = make_result(diverge_at=6)
    assert not result.passed
    text = format_text(result)
    assert "FAIL:" in text and "browser vs cpu: max |Δlogit|" in text
    points = divergence_points(result, "browser vs cpu")
    first = points[0]
    assert (first.why, first.prompt, first.position, first.in_continuation) == ("first top-1 mismatch", "code", 6, True)
    assert first.context.endswith(result.prompts[1].pieces[6])
    assert first.reference_token == WORDS[result.prompts[1].comparisons["browser vs cpu"].ref_top[6]]
    assert first.reference_token != first.candidate_token
    assert "first top-1 mismatch: prompt 'code', position 6 (continuation)" in text
    code = result.prompts[1].comparisons["browser vs cpu"]
    assert code.greedy == 6 - (4 - 1)  # continuation rows start at prompt_len - 1


def test_json_is_strict_and_holds_per_position_series() -> None:
    data = as_json(make_result(diverge_at=6, nan=True))
    text = json.dumps(data, allow_nan=False)  # NaN figures became null
    back = json.loads(text)
    assert back["passed"] is False
    code = back["prompts"][1]["comparisons"]["browser vs cpu"]
    assert len(code["per_position"]["kl"]) == 10
    assert code["per_position"]["kl"][2] is None
    assert code["first_mismatch"] == 2  # NaN logits make the browser's argmax the NaN entry
    assert back["divergences"][0]["comparison"] == "browser vs cpu"
    assert back["overall"]["browser vs cpu"]["positions"] == 22


def test_html_is_self_contained_with_a_chart_per_prompt(tmp_path: Path) -> None:
    result = make_result(diverge_at=6)
    page = format_html(result)
    assert page.count("<svg") == 4  # KL and |Δlogit| for each of the two prompts
    assert "<script" not in page and "<link" not in page
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * 4  # namespaces only
    assert "FAIL" in page and "top-1 mismatch at position 6" in page
    assert write_html(result, tmp_path / "out" / "r.html").read_text() == page


def test_line_chart_handles_zeros_nan_and_a_single_position() -> None:
    svg = line_chart({"a": np.array([0.0, np.nan, 1e-3])}, title="t", marks=[1], boundary=0)
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "nan" not in svg.lower()
    assert "<polyline" in line_chart({"a": np.array([0.5])}, title="one")
