"""scripts/make_gpu_browser_carry.sh + scripts/gpu_browser.sh, the parts that need no GPU: the pieces are
made here, each fits one transfer, and the device side, fed one piece per call as on the GPU machine, runs
`webbuild bench` from them (Debian's Chromium standing in for the headless shell, SwiftShader for the GPU)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_llama import package_tiny_site

pytestmark = pytest.mark.toolchain

REPO = Path(__file__).resolve().parents[1]
PIECE_LIMIT = 64 << 20  # one `run` call carries at most 64 MiB, the working tree included


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_tiny_site(tmp_path_factory.mktemp("gpu-scripts"), seed=4, name="tiny")


def run(cmd: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_pieces_travel_one_by_one_and_bench_runs_from_them(site: Path, tmp_path: Path) -> None:
    twin = shutil.copytree(site, tmp_path / "twin")  # a second site with the same weights: stored once
    carry = tmp_path / "carry"
    env = {"GPU_CARRY": str(carry), "CHS_BINARY": "/usr/lib/chromium/chromium", "XZ_LEVEL": "0", "WITH_CUDA": "0"}
    env["PIECE_MIB"] = "1"  # small pieces, so the shards are split across several as the real weights are
    run(["bash", "scripts/make_gpu_browser_carry.sh", str(site), str(twin)], env)
    pieces = sorted(p.name for p in carry.iterdir() if p.name != "dl")
    assert pieces[:2] == ["chs", "rest"] and len(pieces) >= 3 and all(p.startswith("w") for p in pieces[2:])
    for piece in pieces[1:]:  # (the stand-in browser, fast-compressed, is larger than Debian's headless shell at -9)
        assert sum(f.stat().st_size for f in (carry / piece).rglob("*") if f.is_file()) < PIECE_LIMIT, piece
    shards = sum(f.stat().st_size for f in site.rglob("params_shard_*"))
    carried = sum(f.stat().st_size for p in pieces[2:] for f in (carry / p).iterdir())
    assert carried < 1.2 * shards  # compressed, and the twin's shards (identical) stored once

    # The device: a checkout with one piece in its carry folder per call, a scratch folder kept between calls.
    device = tmp_path / "device"
    shutil.copytree(REPO / "scripts", device / "scripts")
    wb = tmp_path / "wb"
    device_env = {"GPU_CARRY": str(device / "carry"), "WB": str(wb), "GL_ROOT": str(tmp_path / "gl-root")}
    for piece in pieces:
        shutil.rmtree(device / "carry", ignore_errors=True)
        shutil.copytree(carry / piece, device / "carry" / piece)
        run(["bash", "scripts/gpu_browser.sh", "stash"], device_env, cwd=device)
    shutil.rmtree(device / "carry")

    out = tmp_path / "out"
    # Here python3 is this checkout's environment (there, the machine's python3 with the carried wheels).
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    bench_env = device_env | {"OUT": str(out), "ENGINES": "browser", "BROWSER_FLAGS": "", "PATH": path}
    proc = run(
        ["bash", str(REPO / "scripts/gpu_browser.sh"), "bench", site.name, "--max-tokens", "3", "--repeat", "1"],
        bench_env,
    )
    assert "browser (google swiftshader" in proc.stdout
    (figures,) = json.loads((out / f"bench-{site.name}.json").read_text())
    assert figures["completion_tokens"] > 0 and figures["decode_tokens_per_s"] > 0
    assert (wb / "sites" / "twin" / "manifest.json").is_file()

    # verify there: the CPU reference scores the site's own weights (the tiny GGUF source is not a preset).
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat on the\n")
    verify_env = bench_env | {"BROWSER_FLAGS": ""}
    proc = run(
        [
            "bash",
            str(REPO / "scripts/gpu_browser.sh"),
            "verify",
            site.name,
            "--reference",
            "cpu",
            "--tokens",
            "4",
            "--prompts",
            str(prompts),
        ],
        verify_env,
    )
    report = json.loads((out / f"verify-{site.name}.json").read_text())
    assert report["passed"] and report["overall"]["browser vs cpu"]["top1_pct"] >= 99, proc.stdout


def test_random_weights_give_a_site_carried_without_shards_weights_it_loads(site: Path, tmp_path: Path) -> None:
    from webbuild.engine.engine import Engine
    from webbuild.site_format.manifest import read_manifest

    bare = shutil.copytree(site, tmp_path / "bare")
    real = {p.name: p.read_bytes() for p in site.rglob("params_shard_*")}
    for shard in bare.rglob("params_shard_*"):
        shard.unlink()
    script = ["python3", str(REPO / "scripts/random_weights.py"), "--if-missing", str(bare)]
    assert "random weights" in run(script, {}).stdout
    filled = {p.name: p.read_bytes() for p in bare.rglob("params_shard_*")}
    assert filled.keys() == real.keys() and all(filled[n] != real[n] for n in real)
    for record in read_manifest(bare).all_files():  # the browser and the engines check these
        assert hashlib.sha256((bare / record.path).read_bytes()).hexdigest() == record.sha256, record.path
    assert run(script, {}).stdout == ""  # shards present: left alone

    reply = Engine(bare, device="cpu").chat.completions.create(
        messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length"  # random weights rarely choose end-of-sequence
    logprobs = [alt["logprob"] for tok in choice["logprobs"]["content"] for alt in tok["top_logprobs"]]
    assert len(logprobs) == 12 and all(-100 < lp <= 0 for lp in logprobs)  # finite: scales and norms are sane
