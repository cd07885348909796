"""The checks every family's test module runs on its tiny transformers model (tests/build/arch/test_<family>.py):
our CPU engine against transformers (logits at every position, greedy tokens), GGUF against safetensors,
tokenizer + chat template ids against transformers' tokenizer, the browser (and CUDA) build against the CPU
engine."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from hf_tiny import PROMPTS, write_gguf, write_hf_dir

from webbuild.build.arch import get_architecture
from webbuild.build.prepare import prepare_model
from webbuild.build.source import load_source
from webbuild.build.weights.gguf import load_gguf

CONTEXT, CHUNK = 128, 32  # one compiled library per family, shared by its tests and its browser test
SEQUENCE = 64  # positions compared with transformers: two prefill chunks
# |ours - transformers| <= LOGIT_TOLERANCE * max|transformers logits| at every position (float32 both sides;
# measured differences are ~1e-6 relative).
LOGIT_TOLERANCE = 1e-4


@dataclass
class TinyFamily:
    """A family's tiny model: its HF directory, the transformers model and our CPU engine over it (q0f32)."""

    family: str
    hf_dir: Path
    hf_model: Any
    engine: Any

    def hf_logits(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.hf_model(torch.tensor([ids])).logits[0].float().numpy()


def tiny_family(family: str, root: Path, **overrides: Any) -> TinyFamily:
    import transformers

    from webbuild.engine.engine import Engine

    hf_dir = write_hf_dir(root / f"{family}-hf", family, seed=1, **overrides)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
    prepared = prepare_model(load_source(str(hf_dir)), "q0f32", CONTEXT, CHUNK)
    return TinyFamily(family, hf_dir, hf_model, Engine(prepared))


def random_ids(vocab: int, length: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(7).integers(0, vocab, length)]


def sequence(tiny: TinyFamily, length: int = SEQUENCE) -> list[int]:
    return random_ids(tiny.engine.model.cfg.vocab_size, length)


def check_logits_match_transformers(tiny: TinyFamily) -> float:
    """Every position's logits, teacher-forced through batch_verify; returns the largest relative difference."""
    ids = sequence(tiny)
    ours, theirs = tiny.engine.score_positions(ids), tiny.hf_logits(ids)
    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=LOGIT_TOLERANCE * scale)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
    return float(np.abs(ours - theirs).max() / scale)


def check_greedy_tokens_match_transformers(tiny: TinyFamily, count: int = 16) -> None:
    """16 greedy tokens through prefill + decode equal transformers' greedy tokens."""
    prompt = sequence(tiny, 12)
    expected = list(prompt)
    for _ in range(count):
        expected.append(int(tiny.hf_logits(expected)[-1].argmax()))
    ours, _ = tiny.engine.greedy(prompt, count)
    assert ours == expected[len(prompt) :]


def gguf_family(tiny: TinyFamily, root: Path) -> TinyFamily:
    """``tiny``'s model written as llama.cpp writes it and built from that GGUF (its tokenizer from the HF directory:
    the tiny GGUF carries none), beside the same transformers model. A GGUF that builds the same config as the HF
    directory reuses its cached CPU library."""
    from webbuild.engine.engine import Engine

    model = load_gguf(write_gguf(root / f"{tiny.family}.gguf", tiny.hf_dir, tiny.family))
    source = replace(load_source(str(tiny.hf_dir)), config=model.config, tensors=model.tensors, origin="gguf")
    return TinyFamily(tiny.family, tiny.hf_dir, tiny.hf_model, Engine(prepare_model(source, "q0f32", CONTEXT, CHUNK)))


def check_gguf_loads_to_the_same_weights(tmp_path: Path, family: str, **overrides: Any) -> None:
    """The model written as llama.cpp writes it gives the same definition config and parameters, bit for bit, but
    for RoPE inverse frequencies within one float32 ulp: a Llama 3 GGUF divides them by llama.cpp's per-pair
    factors (rounded to float32), where the HF config's parameters blend them directly."""
    hf_dir = write_hf_dir(tmp_path / "hf", family, seed=2, **overrides)
    source = load_source(str(hf_dir))
    gguf_model = load_gguf(write_gguf(tmp_path / "m.gguf", hf_dir, family))
    arch = get_architecture(source.config["model_type"])
    assert gguf_model.config["model_type"] == arch.name
    cfg, gguf_cfg = (arch.config_from_hf(c, CONTEXT, CHUNK) for c in (source.config, gguf_model.config))
    assert replace(gguf_cfg, rope=replace(gguf_cfg.rope, inv_freq=cfg.rope.inv_freq)) == cfg
    np.testing.assert_array_max_ulp(
        np.array(gguf_cfg.rope.inv_freq, np.float32), np.array(cfg.rope.inv_freq, np.float32), maxulp=1
    )
    ours = arch.weights(source.tensors, cfg, "safetensors")
    theirs = arch.weights(gguf_model.tensors, gguf_cfg, "gguf")
    assert list(theirs) == list(ours)
    for name, array in ours.items():
        np.testing.assert_array_equal(theirs[name], array, err_msg=name)


def check_token_ids_match_transformers(tiny: TinyFamily, **template_kwargs: Any) -> None:
    """Plain text and chat-formatted prompts (code, numbers, several scripts) give transformers' ids."""
    import transformers

    theirs = transformers.AutoTokenizer.from_pretrained(tiny.hf_dir)
    for text in PROMPTS:
        assert tiny.engine.encode_prompt(text) == theirs(text)["input_ids"], text
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
        expected = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **template_kwargs)
        ours = tiny.engine.encode_messages(messages, template_kwargs)
        assert ours == theirs(expected, add_special_tokens=False)["input_ids"], text
        assert tiny.engine.decode(tiny.engine.encode_prompt(text)) == theirs.decode(
            theirs(text)["input_ids"], skip_special_tokens=True
        )


def check_browser_agrees_with_cpu(tiny: TinyFamily, tmp_path: Path) -> None:
    """``webbuild package`` (q0f32: the software adapter has no shader-f16), then ``webbuild verify`` scores the
    built-in-style prompts in headless Chromium (SwiftShader WebGPU) against the same model on the CPU engine."""
    import contextlib
    import io

    from webbuild import cli
    from webbuild.commands.package import PackageOptions, package

    options = PackageOptions(
        str(tiny.hf_dir),
        out=tmp_path / "site",
        quantizations=["q0f32"],
        context_window_size=CONTEXT,
        prefill_chunk_size=CHUNK,
    )
    site = package(options).site
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps([{"name": "code", "text": PROMPTS[0], "chat": False}, {"name": "mixed", "text": PROMPTS[3]}])
    )
    args = ["--quiet", "verify", str(site), "--source", str(tiny.hf_dir), "--prompts", str(prompts)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*args, "--tokens", "6", "--reference", "cpu", "--json"])
    report = json.loads(out.getvalue())
    assert code == 0, report["failures"]
    overall = report["overall"]["browser vs cpu"]
    assert overall["top1_pct"] == 100.0 and overall["abs_max"] < 5e-3, overall


# --- the CUDA engine against the CPU engine, on the same weights (tests/build/arch/test_families_cuda.py) --------

# Every family's tiny model, and the sliding-window layouts with a window (16) shorter than the compared sequence:
# Gemma 3's local layers, Phi-3's every layer, Qwen2's layers from max_window_layers on.
DEVICE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "phi3": ("phi3", {}),
    "gemma3": ("gemma3", {}),
    "gemma3-window16": ("gemma3", {"sliding_window": 16}),
    "phi3-window16": ("phi3", {"sliding_window": 16}),
    "qwen2-window16": ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1}),
}
# max|cuda - cpu| <= tolerance * max|cpu| at every position. Both sides compute in float32 from the same stored
# weights (q4f32_1 dequantizes inside the matmuls), so only the order of the sums differs.
DEVICE_TOLERANCE = {"q0f32": 1e-4, "q4f32_1": 1e-3}
DEVICE_SEQUENCE = CONTEXT  # the whole context: 4 prefill chunks of 32, or 8 of a window of 16
GREEDY_PROMPT, GREEDY_TOKENS = 40, 24  # decoding from 40 to 64 positions: well past a window of 16


def write_variant(root: Path, name: str) -> Path:
    """The tiny HF directory of ``DEVICE_VARIANTS[name]`` under ``root`` (needs transformers)."""
    family, overrides = DEVICE_VARIANTS[name]
    return write_hf_dir(root / name, family, seed=1, **overrides)


@dataclass
class DeviceAgreement:
    """The CUDA engine's logits and greedy tokens against the CPU engine's, over one tiny model and scheme."""

    variant: str
    scheme: str
    chunks: int  # prefill chunks the compared sequence took
    sliding_window: int  # 0: every layer attends to the whole context
    rel_max: float  # max|cuda - cpu| / max|cpu| over every position and token
    top1: float  # fraction of positions whose top-1 tokens agree
    greedy_same: int  # leading greedy tokens the CUDA engine picks as the CPU engine does
    greedy_of: int


def device_agreement(hf_dir: Path, scheme: str) -> DeviceAgreement:
    """Scores ``DEVICE_SEQUENCE`` positions through ``score_positions`` and decodes greedily on both engines."""
    from webbuild.engine.engine import Engine

    prepared = prepare_model(load_source(str(hf_dir)), scheme, CONTEXT, CHUNK)
    cpu, cuda = Engine(prepared), Engine(prepared, device="cuda")
    cfg = prepared.cfg
    ids = random_ids(cfg.vocab_size, DEVICE_SEQUENCE)
    expected, ours = cpu.score_positions(ids), cuda.score_positions(ids)
    prompt = ids[:GREEDY_PROMPT]
    cpu_tokens, cuda_tokens = cpu.greedy(prompt, GREEDY_TOKENS)[0], cuda.greedy(prompt, GREEDY_TOKENS)[0]
    same = next((i for i, (a, b) in enumerate(zip(cpu_tokens, cuda_tokens, strict=True)) if a != b), GREEDY_TOKENS)
    return DeviceAgreement(
        variant=hf_dir.name,
        scheme=scheme,
        chunks=-(-len(ids) // cfg.prefill_chunk_size),
        sliding_window=cfg.sliding_window,
        rel_max=float(np.abs(ours - expected).max() / np.abs(expected).max()),
        top1=float((ours.argmax(-1) == expected.argmax(-1)).mean()),
        greedy_same=same,
        greedy_of=GREEDY_TOKENS,
    )


# --- the browser past a sliding window (tests/build/arch/test_families.py) ------------------------------------

PAST_PROMPT, PAST_STEPS = 40, 40  # prefill chunks of 16, 16 and 8, then decode steps to 80 positions: five windows
# max|browser - cpu| <= tolerance * max|cpu| at every position: float32 on both sides. SwiftShader's differences were
# 1e-4 to 4e-4 from the second position on, within the first window as past it; with the global layers reading the
# window's page table (TVM's runtime unpatched) Gemma 3's were 0.75.
BROWSER_TOLERANCE = 1e-3

_PAST_THE_WINDOW_JS = """(async ([prompt, forced, ids]) => {
  const engine = window.webbuildApp.engine;
  const steps = await engine.forwardTokens(prompt, forced);
  const scores = await engine.scoreTokens(ids, { topK: 1, fullLogits: true });
  return { steps: steps.map((logits) => Array.from(logits)), positions: Array.from(scores.logits) };
})"""


def check_browser_attends_past_the_window(root: Path, name: str) -> None:
    """``DEVICE_VARIANTS[name]`` (a window of 16) packaged as a site, whose WebGPU variant keeps the whole context
    of 128, run in headless Chromium (SwiftShader): logits after a prompt of three prefill chunks and after each
    of 40 decode steps (``forwardTokens``), and at every one of 128 positions scored through eight chunks
    (``scoreTokens``), equal the CPU engine's on the site's own weights."""
    from webbuild.commands.bench import site_page
    from webbuild.commands.package import PackageOptions, package
    from webbuild.engine.engine import Engine

    options = PackageOptions(
        str(write_variant(root, name)),
        out=root / "site",
        quantizations=["q0f32"],
        context_window_size=CONTEXT,
        prefill_chunk_size=CHUNK,
    )
    site = package(options).site
    engine = Engine(site)
    cfg = engine.model.cfg
    assert cfg.sliding_window == 16 and cfg.context_window_size == CONTEXT and cfg.prefill_chunk_size == 16
    ids = random_ids(cfg.vocab_size, CONTEXT)
    prompt, forced = ids[:PAST_PROMPT], ids[PAST_PROMPT : PAST_PROMPT + PAST_STEPS]
    want = {"steps": np.stack(engine.score(prompt, forced)), "positions": engine.score_positions(ids)}
    with site_page(site) as (page, _):
        out = page.evaluate(f"{_PAST_THE_WINDOW_JS}({json.dumps([prompt, forced, ids])})")
    for key, expected in want.items():
        got = np.asarray(out[key], np.float32).reshape(expected.shape)
        worst = np.abs(got - expected).max(axis=1) / np.abs(expected).max()
        assert worst.max() <= BROWSER_TOLERANCE, f"{key}: logits differ by {worst.max():.3g} at row {worst.argmax()}"
        assert (got.argmax(-1) == expected.argmax(-1)).all(), key
