"""The Python engine: ``Engine(model, device="cpu").chat.completions.create(...)`` with OpenAI's shapes.

It runs the ``llvm`` (or ``cuda``) build of the same model definition the browser runs, with the same
weights, chat template and tokenizer, so it is the reference the browser is checked against.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from . import _log
from .chat_template import ChatTemplate
from .errors import ContextLengthExceededError, InputError
from .library import build_library
from .model_runner import ModelRunner
from .openai_api import (
    Request,
    ResponseBuilder,
    SamplingParams,
    parse_chat_request,
    parse_completion_request,
    usage,
)
from .prepare import PreparedModel, prepare_model, read_model_files
from .sampling import Sampler
from .source import load_source
from .text_stream import TextStream


def load_prepared(model: str | Path, quantization: str | None = None) -> PreparedModel:
    """A bundle directory (its default or ``quantization`` variant) or any model spec ``package`` accepts."""
    path = Path(model)
    manifest = path / "manifest.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        variants = {m["quantization"]: m for m in info["models"]}
        chosen = (
            variants.get(quantization)
            if quantization
            else next(m for m in info["models"] if m["id"] == info["default_model"])
        )
        if chosen is None:
            raise InputError(f"{path} has no {quantization} build; it has {', '.join(variants)}")
        return read_model_files(path / chosen["model_url"], info["name"])
    with _log.timed(f"loading {model}"):
        return prepare_model(load_source(str(model)), quantization)


@dataclass
class Generation:
    """Counters of one request, reported as usage."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    finish_reason: str = "length"

    def stats(self) -> dict[str, float]:
        decode_steps = max(self.completion_tokens - 1, 0)
        return {
            "prefill_tokens_per_s": round(self.prompt_tokens / self.prefill_seconds, 2)
            if self.prefill_seconds
            else 0.0,
            "decode_tokens_per_s": round(decode_steps / self.decode_seconds, 2) if self.decode_seconds else 0.0,
            "time_to_first_token_s": round(self.prefill_seconds, 4),
        }


class Engine:
    """One model on one device; requests run one at a time."""

    def __init__(self, model: str | Path | PreparedModel, device: str = "cpu", quantization: str | None = None):
        self.model = model if isinstance(model, PreparedModel) else load_prepared(model, quantization)
        self.model_name = self.model.variant_id
        library = build_library(self.model.cfg, self.model.scheme, device)
        self.runner = ModelRunner(
            library,
            self.model.params,
            list(self.model.params),
            context_window_size=self.model.cfg.context_window_size,
            prefill_chunk_size=self.model.cfg.prefill_chunk_size,
            device=device,
        )
        self.tokenizer = Tokenizer.from_str(self.model.tokenizer_json)
        self.template = (
            ChatTemplate(self.model.tokenizer_config) if self.model.tokenizer_config.get("chat_template") else None
        )
        conv = self.model.chat_config.get("conv_template", {})
        eos = self.model.chat_config.get("eos_token_id")
        self.stop_token_ids = set(conv.get("stop_token_ids") or []) | set(
            eos if isinstance(eos, list) else [eos] if eos is not None else []
        )
        self.chat = _Namespace(completions=_Creator(self, chat=True))
        self.completions = _Creator(self, chat=False)
        self._lock = threading.Lock()
        self.last: Generation | None = None

    # -- tokens -------------------------------------------------------------------------------------------
    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]:
        if self.template is None:
            raise InputError("this model has no chat template; use completions.create(prompt=...)")
        return self.tokenizer.encode(self.template.render(messages), add_special_tokens=False).ids

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt, add_special_tokens=True).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def forward_tokens(self, token_ids: list[int]) -> np.ndarray:
        """Logits after feeding ``token_ids`` to a fresh sequence (prefill); the reference for ``verify``."""
        with self._lock:
            self.runner.reset()
            return self.runner.prefill(token_ids)

    # -- generation ---------------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Iterator[str]:
        """Checks the request now, then returns an iterator of text deltas.

        ``self.last`` holds the counters and finish reason once the iterator is exhausted.
        """
        window = self.model.cfg.context_window_size
        if len(prompt_ids) >= window:
            raise ContextLengthExceededError(
                f"the prompt has {len(prompt_ids)} tokens; this model's context window is {window}",
                param="messages",
            )
        budget = window - len(prompt_ids)
        return self._generate(prompt_ids, sampling, min(sampling.max_tokens or budget, budget))

    def _generate(self, prompt_ids: list[int], sampling: SamplingParams, max_tokens: int) -> Iterator[str]:
        sampler = Sampler(sampling.seed)
        stream = TextStream(self.decode, sampling.stop)
        gen = Generation(prompt_tokens=len(prompt_ids))
        self.last = gen
        with self._lock:
            self.runner.reset()
            t0 = time.perf_counter()
            logits = self.runner.prefill(prompt_ids)
            gen.prefill_seconds = time.perf_counter() - t0
            t1 = time.perf_counter()
            while True:
                token = sampler.sample(logits, sampling.temperature, sampling.top_p)
                if token in self.stop_token_ids:
                    gen.finish_reason = "stop"
                    break
                gen.completion_tokens += 1
                delta = stream.push(token)
                if delta:
                    yield delta
                if stream.stopped:
                    gen.finish_reason = "stop"
                    break
                if gen.completion_tokens >= max_tokens:
                    gen.finish_reason = "length"
                    break
                logits = self.runner.decode(token)
            gen.decode_seconds = time.perf_counter() - t1
            tail = stream.flush()
            if tail:
                yield tail

    def create(self, request: Request) -> dict[str, Any] | Iterator[dict[str, Any]]:
        chat = request.messages is not None
        if chat:
            prompt_ids = self.encode_messages(request.messages)
        elif isinstance(request.prompt, list):
            prompt_ids = request.prompt
        else:
            prompt_ids = self.encode_prompt(request.prompt or "")
        builder = ResponseBuilder(model=self.model_name, chat=chat)
        deltas = self.generate(prompt_ids, request.sampling)
        if request.stream:
            return self._stream(builder, deltas, request.include_usage)
        text = "".join(deltas)
        gen = self.last
        assert gen is not None
        return builder.complete(text, gen.finish_reason, usage(gen.prompt_tokens, gen.completion_tokens, gen.stats()))

    def _stream(self, builder: ResponseBuilder, deltas: Iterator[str], include_usage: bool) -> Iterator[dict]:
        if builder.chat:
            yield builder.chunk(None, role=True)
        for delta in deltas:
            yield builder.chunk(delta)
        gen = self.last
        assert gen is not None
        yield builder.chunk(None if builder.chat else "", finish_reason=gen.finish_reason)
        if include_usage:
            yield builder.usage_chunk(usage(gen.prompt_tokens, gen.completion_tokens, gen.stats()))


class _Creator:
    def __init__(self, engine: Engine, chat: bool) -> None:
        self._engine, self._chat = engine, chat

    def create(self, **body: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        parse = parse_chat_request if self._chat else parse_completion_request
        return self._engine.create(parse(body, self._engine.model.defaults))


@dataclass
class _Namespace:
    completions: _Creator
