"""The references ``webbuild verify`` holds the browser against, each scoring token sequences into
[positions, vocab] logits (row i predicts token i + 1).

- ``cpu``: the ``llvm`` build of the same definition and quantization. Its weights are quantized afresh from
  the model's source, not read from the bundle, so weights altered or damaged after the build show up as a
  divergence (and in the weights check); without a source it falls back to the bundle's own weights.
- ``cuda``: the same on the GPU, when TVM sees one.
- ``hf``: Hugging Face transformers on the unquantized source weights: measures quantization loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from webbuild import _log
from webbuild.errors import DownloadError, InputError, WebbuildError
from webbuild.site_format import read_manifest

if TYPE_CHECKING:  # TVM and the weight readers load only when a run needs them
    from webbuild.build.prepare import PreparedModel
    from webbuild.build.source import ModelSource

REFERENCES = ("cpu", "cuda", "hf")
TORCH_TIP = "pip install torch transformers (CPU wheels are enough; see pytorch.org for others)"


class Scorer(Protocol):
    name: str

    def score(self, token_ids: Sequence[int]) -> np.ndarray: ...


@dataclass
class ReferenceStatus:
    """What became of one requested reference: ``ok``, ``skipped`` (not available here) or ``failed``."""

    name: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class WeightsCheck:
    """The bundle's stored tensors against the source quantized afresh with the same scheme."""

    compared: int
    differing: list[tuple[str, float]] = field(default_factory=list)  # (tensor, max |Δ|; inf: shape/dtype differ)

    def as_dict(self) -> dict[str, Any]:
        differing = [{"tensor": n, "max_abs_diff": d if np.isfinite(d) else None} for n, d in self.differing]
        return {"compared": self.compared, "differing": differing}


class EngineScorer:
    """A Python engine (``Engine.score_positions``: batch_verify, chunked like the browser)."""

    def __init__(self, name: str, engine: Any) -> None:
        self.name = name
        self.engine = engine

    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        return self.engine.score_positions(list(token_ids))


class HFScorer:
    """transformers' implementation of the architecture with the source's float32 weights, on the CPU."""

    name = "hf"

    def __init__(self, source: ModelSource) -> None:
        import torch
        import transformers

        config = dict(source.config)
        model_type = config.pop("model_type")
        config.pop("torch_dtype", None)
        hf_config = transformers.AutoConfig.for_model(model_type, **config)
        model = transformers.AutoModelForCausalLM.from_config(hf_config).float().eval()
        state = {k: torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)) for k, t in source.tensors.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if hf_config.tie_word_embeddings else set()
        if unexpected or set(missing) - tied:
            raise WebbuildError(
                f"transformers' {type(model).__name__} does not match the source weights: missing "
                f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        if tied:
            model.tie_weights()
        self.model = model
        self.torch = torch

    def score(self, token_ids: Sequence[int]) -> np.ndarray:
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([list(token_ids)], dtype=self.torch.long))
        return out.logits[0].float().numpy()


@dataclass
class References:
    """Scorers that started, the status of every requested one, and the weights check (when a source was
    found). ``token_source`` produces the greedy continuations: the CPU engine, else the CUDA one."""

    scorers: dict[str, Scorer]
    statuses: list[ReferenceStatus]
    weights: WeightsCheck | None
    token_source: Any


def site_source_spec(site: Path) -> str:
    """The model a site was built from, as recorded in its manifest (a preset name for presets)."""
    return read_manifest(site).name


def resolve_source(site: Path, spec: str | None) -> tuple[ModelSource | None, str]:
    """The unquantized model behind a site: ``spec`` when given, else the manifest's model name when it is
    a preset (or a path) that loads. Returns (source or None, what was tried or why not)."""
    from webbuild.build.source import load_source

    name = spec or site_source_spec(site)
    try:
        with _log.timed(f"loading the source model {name}"):
            return load_source(name), name
    except (InputError, DownloadError) as exc:  # offline, the preset's download fails: the bundle is scored
        if spec:
            raise
        return None, f"{name} is not a preset or path here ({exc.message.split(';')[0]}); pass --source"


def compare_weights(bundle: dict[str, np.ndarray], fresh: dict[str, np.ndarray]) -> WeightsCheck:
    """Which stored tensors differ from the freshly quantized ones (by value; integers compared as floats)."""
    check = WeightsCheck(compared=len(fresh))
    for name, want in fresh.items():
        got = bundle.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            check.differing.append((name, float("inf")))
        elif not np.array_equal(got, want):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            check.differing.append((name, float(np.nanmax(diff)) if diff.size else 0.0))
    return check


def build_references(
    names: Sequence[str],
    *,
    site: Path,
    bundle: PreparedModel,
    model_dir: Path,
    source: ModelSource | None,
    source_note: str,
) -> References:
    """Starts the requested references (``cpu``, ``cuda``, ``hf``); unavailable ones are reported as
    skipped, not raised, except that ``cpu`` must start when asked for."""
    from webbuild.build.prepare import prepare_model
    from webbuild.engine.engine import Engine, EngineConfig
    from webbuild.site_format.tensor_cache import read_tensor_cache

    unknown = [n for n in names if n not in REFERENCES]
    if unknown:
        raise InputError(f"unknown reference {unknown[0]!r}; choose from {', '.join(REFERENCES)}", param="reference")
    scorers: dict[str, Scorer] = {}
    statuses: list[ReferenceStatus] = []
    weights = None
    prepared = None
    cfg = bundle.cfg
    if source is not None and {"cpu", "cuda"} & set(names):
        with _log.timed(f"quantizing the source as {bundle.scheme.name} for the reference engines"):
            # the bundle's scheme with its policy (an --embeddings override included)
            prepared = prepare_model(source, bundle.scheme, cfg.context_window_size, cfg.prefill_chunk_size)
        weights = compare_weights(read_tensor_cache(model_dir), prepared.params)
    origin = (
        f"{bundle.scheme.name} quantized from {source.model_id}"
        if prepared is not None
        else f"the bundle's own weights ({source_note})"
    )
    config = EngineConfig(mode="interactive")
    quant = bundle.scheme.name
    engines: dict[str, Any] = {}
    for name in names:
        if name == "cpu":
            with _log.timed("starting the CPU reference engine (llvm build, cached after the first compile)"):
                engines[name] = Engine(prepared or site, quantization=quant, config=config)
            statuses.append(ReferenceStatus(name, "ok", f"llvm build, {origin}"))
        elif name == "cuda":
            import tvm

            if not tvm.cuda(0).exist:
                statuses.append(ReferenceStatus(name, "skipped", "no CUDA GPU visible to TVM"))
                continue
            try:
                with _log.timed("starting the CUDA reference engine"):
                    engines[name] = Engine(prepared or site, "cuda", quantization=quant, config=config)
            except (WebbuildError, RuntimeError) as exc:
                statuses.append(ReferenceStatus(name, "failed", f"{type(exc).__name__}: {exc}"[:300]))
                continue
            statuses.append(ReferenceStatus(name, "ok", f"cuda build, {origin}"))
        elif name == "hf":
            status = _start_hf(source, source_note, scorers)
            statuses.append(status)
    for name, engine in engines.items():
        scorers[name] = EngineScorer(name, engine)
    token_source = engines.get("cpu") or engines.get("cuda")
    if token_source is None:
        raise InputError(
            "verify needs the cpu (or cuda) reference: it generates the greedy continuations all engines score",
            param="reference",
            tip="Add cpu to --reference.",
        )
    return References(scorers, statuses, weights, token_source)


def _start_hf(source: ModelSource | None, source_note: str, scorers: dict[str, Scorer]) -> ReferenceStatus:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return ReferenceStatus("hf", "skipped", f"{exc.name} is not installed: {TORCH_TIP}")
    if source is None:
        return ReferenceStatus("hf", "skipped", f"no unquantized source: {source_note}")
    try:
        with _log.timed("loading the unquantized model in transformers"):
            scorers["hf"] = HFScorer(source)
    except (WebbuildError, ValueError, KeyError) as exc:
        return ReferenceStatus("hf", "failed", f"{exc}"[:300])
    return ReferenceStatus("hf", "ok", f"transformers {_version('transformers')}, float32 weights of {source.origin}")


def _version(package: str) -> str:
    from importlib.metadata import version

    try:
        return version(package)
    except Exception:  # a package without metadata: the version is only informative
        return "?"
