"""A model ready to run: architecture config, quantized parameters in definition order, tokenizer files.

``webbuild package`` writes one to a bundle's ``models/<id>/`` folder; the Python engine either prepares one
from a source in memory or reads it back from a bundle, so both engines run the very same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tvm.target import Target

from webbuild.build.arch import get_architecture
from webbuild.build.arch.blocks import CausalLM
from webbuild.build.arch.config import DecoderConfig
from webbuild.build.chat_config import build_chat_config, write_chat_config
from webbuild.build.quantize import QuantReport, QuantScheme, default_quantization, get_scheme, quantize_params
from webbuild.build.quantize.params import logical_param_count
from webbuild.build.source import ModelSource
from webbuild.errors import InputError, WebbuildError
from webbuild.site_format import CHAT_CONFIG_JSON, TOKENIZER_CONFIG_JSON, TOKENIZER_JSON
from webbuild.site_format.tensor_cache import TensorCacheSummary, read_tensor_cache, write_tensor_cache

DEFAULT_CONTEXT_WINDOW = 2048
DEFAULT_PREFILL_CHUNK = 512


@dataclass
class PreparedModel:
    model_id: str
    cfg: DecoderConfig
    scheme: QuantScheme
    params: dict[str, np.ndarray]  # in the definition's parameter order
    tokenizer_json: str
    tokenizer_config: dict[str, Any]
    chat_config: dict[str, Any]  # mlc-chat-config.json
    quant_report: QuantReport | None = None  # how each source tensor was stored (None when read from a bundle)

    @property
    def variant_id(self) -> str:
        return f"{self.model_id}-{self.scheme.name}"

    @property
    def defaults(self) -> dict[str, Any]:
        return {"temperature": self.chat_config["temperature"], "top_p": self.chat_config["top_p"]}


def parameter_specs(cfg: DecoderConfig, scheme: QuantScheme) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every parameter the definition declares, in order (no compile needed)."""
    model = CausalLM(cfg, scheme, Target({"kind": "llvm"}))
    return {name: (tuple(int(d) for d in p.shape), p.dtype) for name, p in model.named_parameters()}


def source_scheme(source: ModelSource, quantization: str | QuantScheme | None, embeddings: str | None) -> QuantScheme:
    """The scheme asked for (a name or a scheme), else the preset's, else the one that keeps what the source has;
    ``embeddings`` overrides its embedding/head layout."""
    if isinstance(quantization, QuantScheme):
        return quantization.with_embeddings(embeddings)
    name = quantization or source.defaults.get("quantization") or default_quantization(source.tensors)
    return get_scheme(name, embeddings)


def prepare_model(
    source: ModelSource,
    quantization: str | QuantScheme | None = None,
    context_window_size: int | None = None,
    prefill_chunk_size: int | None = None,
    embeddings: str | None = None,
) -> PreparedModel:
    """The source's weights quantized to the scheme, with the config and chat config of one variant."""
    arch = get_architecture(str(source.config.get("model_type")))
    scheme = source_scheme(source, quantization, embeddings)
    cfg = arch.config_from_hf(
        source.config,
        context_window_size or source.defaults.get("context_window_size", DEFAULT_CONTEXT_WINDOW),
        prefill_chunk_size or source.defaults.get("prefill_chunk_size", DEFAULT_PREFILL_CHUNK),
    )
    converted = arch.weights(source.tensors, cfg, source.origin)
    stored, report = quantize_params(converted, scheme)
    specs = parameter_specs(cfg, scheme)
    if set(stored) != set(specs):
        raise WebbuildError(
            f"weights do not match the {arch.name} definition: missing {sorted(set(specs) - set(stored))[:5]}, "
            f"unexpected {sorted(set(stored) - set(specs))[:5]}"
        )
    for name, (shape, dtype) in specs.items():
        if stored[name].shape != shape or str(stored[name].dtype) != dtype:
            raise WebbuildError(
                f"tensor {name} has shape {stored[name].shape} {stored[name].dtype}, the definition expects "
                f"{shape} {dtype}: the config does not match the weights"
            )
    chat_config = build_chat_config(
        source.config,
        source.tokenizer_config,
        generation_config=source.generation_config,
        quantization=scheme.name,
        quantization_policy=scheme.policy,
        context_window_size=cfg.context_window_size,
        prefill_chunk_size=cfg.prefill_chunk_size,
        temperature=source.defaults.get("temperature", 1.0),
        top_p=source.defaults.get("top_p", 1.0),
        model_type=cfg.model_type,
        tokenizer_json=source.tokenizer_json,
    )
    return PreparedModel(
        model_id=source.model_id,
        cfg=cfg,
        scheme=scheme,
        params={name: stored[name] for name in specs},
        tokenizer_json=source.tokenizer_json,
        tokenizer_config=source.tokenizer_config,
        chat_config=chat_config,
        quant_report=report,
    )


def write_model_files(model: PreparedModel, out_dir: Path) -> TensorCacheSummary:
    """Writes the browser-loadable model folder: tensor cache, mlc-chat-config.json, tokenizer files."""
    summary = write_tensor_cache(model.params, out_dir, param_count=logical_param_count(model.params, model.scheme))
    write_chat_config(out_dir, model.chat_config)
    (out_dir / TOKENIZER_JSON).write_text(model.tokenizer_json)
    (out_dir / TOKENIZER_CONFIG_JSON).write_text(json.dumps(model.tokenizer_config, indent=2, ensure_ascii=False))
    return summary


def read_model_files(model_dir: Path, model_id: str, *, params: bool = True) -> PreparedModel:
    """The inverse of ``write_model_files``, checking integrity of the shards on the way; ``params=False``
    reads only the configs and tokenizer (the parameters are left empty)."""
    try:
        chat_config = json.loads((model_dir / CHAT_CONFIG_JSON).read_text())
        tokenizer_json = (model_dir / TOKENIZER_JSON).read_text()
        tokenizer_config = json.loads((model_dir / TOKENIZER_CONFIG_JSON).read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{model_dir} is not a webbuild model folder: {exc.filename} is missing") from None
    arch = get_architecture(chat_config["model_type"])
    cfg = arch.config_from_hf(
        chat_config["model_config"], chat_config["context_window_size"], chat_config["prefill_chunk_size"]
    )
    return PreparedModel(
        model_id=model_id,
        cfg=cfg,
        scheme=get_scheme(chat_config["quantization"]).with_policy(chat_config.get("quantization_policy")),
        params=read_tensor_cache(model_dir) if params else {},
        tokenizer_json=tokenizer_json,
        tokenizer_config=tokenizer_config,
        chat_config=chat_config,
    )
