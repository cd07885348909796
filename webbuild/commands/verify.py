"""``webbuild verify``: the site's browser (WebGPU) outputs checked against CPU, CUDA and Hugging Face
references.

For each prompt the CPU reference generates a greedy continuation; the prompt plus that continuation is then
scored in one teacher-forced pass by every engine, so position i means the same thing everywhere. The
browser is held to the same-quantization references (cpu, cuda) by thresholds; its distance from the
unquantized model (hf), and the CPU build's, are reported as quantization loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer

from webbuild import _log
from webbuild.engine.chat_template import ChatTemplate
from webbuild.engine.text_stream import TextStream
from webbuild.errors import InputError
from webbuild.site_format import read_manifest
from webbuild.verify.metrics import PositionMetrics, Summary, Thresholds, compare, summarize
from webbuild.verify.prompts import BUILTIN_PROMPTS, VerifyPrompt, fill_length, load_prompts
from webbuild.verify.references import ReferenceStatus, WeightsCheck, build_references, resolve_source

if TYPE_CHECKING:
    from webbuild.build.prepare import PreparedModel

# (candidate, reference): the comparisons made when both ran. Gated ones are held to the thresholds.
PAIRS = (("browser", "cpu"), ("browser", "cuda"), ("browser", "hf"), ("cpu", "hf"), ("cuda", "cpu"))
GATED = {("browser", "cpu"), ("browser", "cuda")}


def pair_key(candidate: str, reference: str) -> str:
    return f"{candidate} vs {reference}"


@dataclass
class VerifyOptions:
    site: Path
    prompts: Path | None = None  # default: the built-in set
    references: list[str] = field(default_factory=lambda: ["cpu", "cuda", "hf"])
    tokens: int = 16  # greedy continuation per prompt
    source: str | None = None  # the unquantized model; default: the manifest's model name
    quantization: str | None = None  # which build of the site; default: the one the page picks
    thresholds: Thresholds = field(default_factory=Thresholds)
    load_timeout_s: float = 1800


@dataclass
class PromptResult:
    prompt: VerifyPrompt
    token_ids: list[int]
    prompt_len: int
    pieces: list[str]  # each token decoded alone, for pointing at positions
    comparisons: dict[str, PositionMetrics]  # by pair_key

    @property
    def continuation(self) -> list[int]:
        return self.token_ids[self.prompt_len :]


@dataclass
class VerifyResult:
    site: Path
    model_id: str
    quantization: str
    adapter: dict[str, Any]
    references: list[ReferenceStatus]
    weights: WeightsCheck | None
    prompts: list[PromptResult]
    overall: dict[str, Summary]  # by pair_key
    thresholds: Thresholds
    failures: list[str]
    seconds: float

    token_text: Callable[[int], str]  # one token id as text, for pointing at divergences
    gated: list[str] = field(default_factory=list)  # comparisons held to the thresholds

    @property
    def passed(self) -> bool:
        return not self.failures


def _encode(bundle: PreparedModel, tokenizer: Tokenizer, prompt: VerifyPrompt, tokens: int) -> list[int]:
    """Prompt token ids as the browser's chat page would make them (chat template, or the raw text)."""
    has_template = bool(bundle.tokenizer_config.get("chat_template"))
    if prompt.chat and has_template:
        text = ChatTemplate(bundle.tokenizer_config).render([{"role": "user", "content": prompt.text}])
        ids = tokenizer.encode(text, add_special_tokens=False).ids
    else:
        ids = tokenizer.encode(prompt.text, add_special_tokens=True).ids
    cfg = bundle.cfg
    if prompt.fill and ids:
        want = fill_length(cfg.prefill_chunk_size, cfg.context_window_size, tokens)
        ids = (ids * (want // len(ids) + 1))[:want]
    limit = cfg.context_window_size - tokens
    if len(ids) > limit:
        raise InputError(
            f"prompt {prompt.name!r} has {len(ids)} tokens; with --tokens {tokens} it exceeds the context window "
            f"of {cfg.context_window_size}",
            tip="Shorten it or lower --tokens.",
        )
    if not ids:
        raise InputError(f"prompt {prompt.name!r} is empty after tokenization")
    return ids


def verify(opts: VerifyOptions) -> VerifyResult:
    """Runs every prompt through the browser and the references and compares them."""
    from webbuild.build.prepare import read_model_files
    from webbuild.verify.browser import BrowserScorer

    t0 = time.monotonic()
    site = Path(opts.site)
    manifest = read_manifest(site)
    # Without a quantization asked for, the variant every adapter runs (software ones lack shader-f16).
    variant = manifest.variant(opts.quantization) if opts.quantization else manifest.portable_variant()
    model_dir = site / variant.model_url
    bundle = read_model_files(model_dir, variant.id, params=False)
    prompts = load_prompts(opts.prompts) if opts.prompts else list(BUILTIN_PROMPTS)
    if opts.tokens < 1:
        raise InputError("--tokens must be at least 1", param="tokens")
    tokenizer = Tokenizer.from_str(bundle.tokenizer_json)
    encoded = [_encode(bundle, tokenizer, p, opts.tokens) for p in prompts]

    with BrowserScorer(site, model_id=variant.id, load_timeout_s=opts.load_timeout_s) as browser:
        # The page loads the model in its Worker while the references start here.
        source, note = resolve_source(site, opts.source)
        refs = build_references(
            opts.references, site=site, bundle=bundle, model_dir=model_dir, source=source, source_note=note
        )
        del source
        token_ref = "cpu" if "cpu" in refs.scorers else "cuda"
        with _log.timed("waiting for the browser to load the model"):
            info = browser.ready()
        results = []
        for prompt, ids in zip(prompts, encoded, strict=True):
            with _log.timed(f"references: greedy continuation and scoring of {prompt.name!r}"):
                continuation, _ = refs.token_source.greedy(ids, opts.tokens)
                seq = ids + continuation
                logits = {name: scorer.score(seq) for name, scorer in refs.scorers.items()}
            with _log.timed(f"browser: scoring {prompt.name!r} ({len(seq)} tokens)"):
                logits["browser"] = browser.score(seq)
            comparisons = {}
            for cand, ref in PAIRS:
                if cand in logits and ref in logits:
                    forced = continuation if ref == token_ref else None  # the reference's own tokens
                    comparisons[pair_key(cand, ref)] = compare(
                        logits[ref], logits[cand], prompt_len=len(ids), continuation=forced
                    )
            pieces = _pieces(tokenizer, seq)
            del logits
            results.append(PromptResult(prompt, seq, len(ids), pieces, comparisons))
            _log.detail(_one_line(prompt.name, comparisons))

    keys = [pair_key(c, r) for c, r in PAIRS if pair_key(c, r) in results[0].comparisons]
    overall = {key: summarize([r.comparisons[key] for r in results]) for key in keys}
    failures = []
    for cand, ref in sorted(GATED):
        key = pair_key(cand, ref)
        if key in overall:
            failures += [f"{key}: {text}" for text in opts.thresholds.failures(overall[key])]
    if refs.weights is not None and refs.weights.differing:
        names = ", ".join(name for name, _ in refs.weights.differing[:3])
        more = len(refs.weights.differing) - 3
        failures.append(
            f"weights: {len(refs.weights.differing)} of {refs.weights.compared} stored tensors differ from the "
            f"source's {bundle.scheme.name} quantization ({names}{f' and {more} more' if more > 0 else ''})"
        )
    return VerifyResult(
        site=site,
        model_id=str(info.get("id", variant.id)),
        quantization=str(info.get("quantization", variant.quantization)),
        adapter=dict(info.get("adapter") or {}),
        references=refs.statuses,
        weights=refs.weights,
        prompts=results,
        overall=overall,
        thresholds=opts.thresholds,
        failures=failures,
        seconds=time.monotonic() - t0,
        token_text=lambda t: tokenizer.decode([t], skip_special_tokens=False),
        gated=[pair_key(c, r) for c, r in PAIRS if (c, r) in GATED and pair_key(c, r) in overall],
    )


def _pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds; a character split over several byte tokens shows on the last of them."""
    stream = TextStream(lambda part: tokenizer.decode(list(part), skip_special_tokens=False))
    pieces = [stream.push(t) for t in ids]
    pieces[-1] += stream.flush()
    return pieces


def _one_line(name: str, comparisons: dict[str, PositionMetrics]) -> str:
    parts = []
    for key, m in comparisons.items():
        s = summarize([m])
        parts.append(f"{key}: top-1 {s.top1_pct:.1f}%, KL {s.kl_mean:.2g}, max|Δ| {s.abs_max:.2g}")
    return f"{name}: " + "; ".join(parts)
