"""The Python engine: ``Engine(model, device="cpu").chat.completions.create(...)`` with OpenAI's shapes.

It runs the ``llvm`` (or ``cuda``) build of the same model definition the browser runs, with the same
weights, chat template and tokenizer, so it is the reference the browser is checked against. Concurrent
requests share decode steps (see scheduler.py); every method may be called from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from webbuild import _log
from webbuild.build.library import build_library
from webbuild.build.prepare import PreparedModel, prepare_model, read_model_files
from webbuild.build.source import load_source
from webbuild.engine.chat_template import ChatTemplate
from webbuild.engine.grammar import Constraint, Grammars
from webbuild.engine.model_runner import PAGE_SIZE, ModelRunner
from webbuild.engine.request import Request, check_model_limits, parse_chat_request, parse_completion_request
from webbuild.engine.response import Choice, ResponseBuilder, TokenLogprob, usage
from webbuild.engine.scheduler import Generation, Job, Scheduler, stats
from webbuild.engine.tool_calls import FORMATS, ToolCallFormat, ToolCallParser, call_deltas, split_tool_calls
from webbuild.errors import (
    ContextLengthExceededError,
    InputError,
    InvalidRequestError,
    UnsupportedError,
    UnsupportedParameterError,
)
from webbuild.site_format import is_site, read_manifest

# mode -> (max concurrent sequences, KV cache size in context windows), as the seed system's modes:
# one user at a time, a few local apps, or a server.
MODES: dict[str, tuple[int, int]] = {"interactive": (1, 1), "local": (4, 1), "server": (16, 8)}


@dataclass(frozen=True)
class EngineConfig:
    """Batching limits; unset ones come from ``mode``."""

    mode: str = "local"
    max_num_sequence: int | None = None
    max_total_sequence_length: int | None = None
    prefix_cache: bool = True  # finished sequences' KV stays for later prompts that start the same way

    def limits(self, context_window_size: int) -> tuple[int, int]:
        if self.mode not in MODES:
            raise UnsupportedError(f"unknown engine mode {self.mode!r}; choose one of {', '.join(MODES)}")
        sequences, windows = MODES[self.mode]
        total = self.max_total_sequence_length or windows * context_window_size
        if total < context_window_size:
            raise UnsupportedError(
                f"max_total_sequence_length {total} is smaller than the context window {context_window_size}"
            )
        return self.max_num_sequence or sequences, total


def load_prepared(model: str | Path, quantization: str | None = None, *, params: bool = True) -> PreparedModel:
    """A bundle directory (its default or ``quantization`` variant) or any model spec ``package`` accepts;
    ``params=False`` skips a bundle's weights (configs and tokenizer only)."""
    path = Path(model)
    if is_site(path):
        manifest = read_manifest(path)
        variant = manifest.variant(quantization)
        return read_model_files(path / variant.model_url, manifest.name, params=params)
    with _log.timed(f"loading {model}"):
        return prepare_model(load_source(str(model)), quantization)


class Engine:
    """One model on one device serving any number of concurrent requests."""

    def __init__(
        self,
        model: str | Path | PreparedModel,
        device: str = "cpu",
        quantization: str | None = None,
        config: EngineConfig = EngineConfig(),
    ):
        self.model = model if isinstance(model, PreparedModel) else load_prepared(model, quantization)
        self.model_name = self.model.variant_id
        cfg = self.model.cfg
        max_num_sequence, max_total = config.limits(cfg.context_window_size)
        runner = ModelRunner(
            build_library(cfg, self.model.scheme, device),
            self.model.params,
            list(self.model.params),
            context_window_size=cfg.context_window_size,
            prefill_chunk_size=cfg.prefill_chunk_size,
            max_num_sequence=max_num_sequence,
            max_total_sequence_length=max_total,
            device=device,
        )
        self.tokenizer = Tokenizer.from_str(self.model.tokenizer_json)
        has_template = bool(self.model.tokenizer_config.get("chat_template"))
        self.template = ChatTemplate(self.model.tokenizer_config) if has_template else None
        conv = self.model.chat_config.get("conv_template", {})
        eos = self.model.chat_config.get("eos_token_id")
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.stop_token_ids = set(conv.get("stop_token_ids") or []) | set(eos_ids)
        self.scheduler = Scheduler(runner, self.stop_token_ids, self.decode, prefix_cache=config.prefix_cache)
        self.grammars = Grammars(self.model.tokenizer_json, cfg.vocab_size, self.stop_token_ids)
        tool_format = self.model.chat_config.get("tool_call_format")
        self.tool_format: ToolCallFormat | None = FORMATS.get(tool_format) if tool_format else None
        self.chat = _Chat(_Creator(self, chat=True))
        self.completions = _Creator(self, chat=False)

    def metrics(self) -> dict[str, int]:
        """Gauges for /metrics: requests running and waiting, KV cache tokens used, cached and available, and
        the prompt tokens the prefix cache saved from prefilling."""
        return self.scheduler.metrics()

    # -- tokens ---------------------------------------------------------------------------------------------
    def encode_messages(
        self,
        messages: list[dict[str, Any]],
        template_kwargs: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """``template_kwargs``: a request's ``chat_template_kwargs`` (``enable_thinking`` ...); ``tools``: the
        tools the template shows the model."""
        if self.template is None:
            raise InputError("this model has no chat template; use completions.create(prompt=...)")
        text = self.template.render(messages, extra=template_kwargs, tools=tools)
        return self._encode(text, special_tokens=False)

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._encode(prompt, special_tokens=True)

    def _encode(self, text: str, special_tokens: bool) -> list[int]:
        # encode_batch releases the GIL while it works; encode holds it throughout, which for a context window of
        # text stalled every other thread, the server's event loop included, for 150 ms at a time.
        return self.tokenizer.encode_batch([text], add_special_tokens=special_tokens)[0].ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _check_token_ids(self, ids: list[int], param: str) -> None:
        """An id outside the vocabulary would index past the embedding table inside a kernel."""
        if not ids:
            raise InvalidRequestError("the prompt is empty: it encodes to no tokens", param=param)
        vocab = self.model.cfg.vocab_size
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidRequestError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})", param=param)

    def score(self, prompt: list[int], forced: list[int] = ()) -> list[np.ndarray]:
        """Teacher forcing through ``prefill`` then one ``decode`` per forced token, as the browser's
        ``engine.forwardTokens`` does: logits after the prompt, then after each forced token."""
        self._check_token_ids([*prompt, *forced], "prompt")
        return self._single_sequence(
            prompt, lambda step, logits: forced[step] if step < len(forced) else None, len(prompt) + len(forced)
        )

    def greedy(self, prompt: list[int], max_tokens: int) -> tuple[list[int], list[np.ndarray]]:
        """The greedy continuation (no stop tokens) and the logits each token was chosen from."""
        self._check_token_ids(prompt, "prompt")
        tokens: list[int] = []

        def choose(step: int, logits: np.ndarray) -> int | None:
            tokens.append(int(np.argmax(logits)))
            return tokens[-1] if step + 1 < max_tokens else None

        return tokens, self._single_sequence(prompt, choose, len(prompt) + max_tokens)

    def score_positions(self, token_ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits at every position, [len(token_ids), vocab] float32 (row i predicts token
        i + 1), through ``batch_verify`` one prefill chunk at a time, as the browser's ``scoreTokens``."""
        if not token_ids:
            raise InputError("score_positions needs at least one token")
        window = self.model.cfg.context_window_size
        if len(token_ids) > window:
            raise ContextLengthExceededError(f"{len(token_ids)} tokens exceed the context window of {window}")

        def run(runner: ModelRunner) -> np.ndarray:
            seq_id = -1  # never handed out by the scheduler
            runner.add_sequence(seq_id)
            try:
                size = runner.prefill_chunk_size
                chunks = [token_ids[i : i + size] for i in range(0, len(token_ids), size)]
                return np.concatenate([runner.verify(seq_id, list(chunk)) for chunk in chunks])
            finally:
                runner.remove_sequence(seq_id)

        return self.scheduler.call(run, pages=_pages(len(token_ids)))

    def _single_sequence(self, prompt: list[int], next_token: Any, tokens: int) -> list[np.ndarray]:
        """Runs on the scheduler thread: prefill, then decode ``next_token(step, logits)`` until it is None
        (at most ``tokens`` in all, which it makes room for in the KV cache)."""

        def run(runner: ModelRunner) -> list[np.ndarray]:
            seq_id = -1  # never handed out by the scheduler
            runner.add_sequence(seq_id)
            try:
                out = [runner.prefill(seq_id, prompt)]
                while (token := next_token(len(out) - 1, out[-1])) is not None:
                    out.append(runner.decode(seq_id, token))
                return out
            finally:
                runner.remove_sequence(seq_id)

        return self.scheduler.call(run, pages=_pages(tokens))

    # -- generation -----------------------------------------------------------------------------------------
    def create(
        self, request: Request, abort: threading.Event | None = None
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Checks the request now (errors raise here), then runs it: a completion dict, or with ``stream`` an
        iterator of chunks whose ``close()`` aborts the request. Setting ``abort`` from another thread ends the
        request early too (its choices finish with "abort"); the REST API does that when the client leaves."""
        chat = request.messages is not None
        tools = self._tool_format(request)
        grammar = self._grammar(request, tools)
        if chat:
            shown = request.tools if tools is not None else None
            prompt_ids = self.encode_messages(request.messages, request.chat_template_kwargs, shown)
        elif isinstance(request.prompt, list):
            prompt_ids = request.prompt
        else:
            prompt_ids = self.encode_prompt(request.prompt or "")
        self._check_token_ids(prompt_ids, "messages" if chat else "prompt")
        cfg = self.model.cfg
        request = check_model_limits(
            request, len(prompt_ids), context_window_size=cfg.context_window_size, vocab_size=cfg.vocab_size
        )
        job = self.scheduler.submit(
            prompt_ids,
            request.sampling,
            request.sampling.max_tokens,
            n=request.n,
            top_logprobs=request.top_logprobs if request.logprobs else None,
            cancel=abort,
            grammar=grammar,
        )
        builder = ResponseBuilder(model=self.model_name, chat=chat)
        echo = ""  # completions' echo: every choice's text starts with the prompt's
        if request.echo:
            echo = request.prompt if isinstance(request.prompt, str) else self.decode(prompt_ids)
        if request.stream:
            return self._stream(job, builder, request, echo, tools)
        texts: list[list[str]] = [[echo] for _ in range(request.n)]
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(request.n)]
        gens: dict[int, Generation] = {}
        try:
            for event in self.scheduler.events(job):
                if event[0] == "delta":
                    _, index, text, entries = event
                    texts[index].append(text)
                    logprobs[index].extend(entries or ())
                else:
                    gens[event[1]] = event[2]
        finally:
            self.scheduler.abort(job)  # no-op once finished; frees the sequences if the caller was interrupted
        choices = [
            Choice("".join(texts[i]), gens[i].finish_reason, logprobs[i] if request.logprobs else None)
            for i in range(request.n)
        ]
        for choice in choices if tools is not None else ():
            choice.text, choice.tool_calls = split_tool_calls(tools, choice.text or "")
            if choice.tool_calls and choice.finish_reason == "stop":
                choice.finish_reason = "tool_calls"
        return builder.complete(choices, _usage(gens))

    def _tool_format(self, request: Request) -> ToolCallFormat | None:
        """The model's tool-call format when the request offers tools it may call; a model whose chat template
        shows it no tools refuses them."""
        if not request.tools or request.tool_choice == "none":
            return None
        if self.tool_format is None:
            raise UnsupportedParameterError(
                f"{self.model_name}'s chat template does not support tools, so it cannot be shown them or call them.",
                tip="Use a model whose chat template takes tools (Qwen2.5, Qwen3, Llama 3.1+), or drop tools.",
                param="tools",
            )
        return self.tool_format

    def _grammar(self, request: Request, tools: ToolCallFormat | None) -> Constraint | None:
        """What the request's output must follow: its response_format, or its tool calls."""
        if request.response_format is not None:
            return self.grammars.response_format(request.response_format)
        if tools is None:
            return None
        choice: Any = request.tool_choice
        if choice == "function":
            choice = {"type": "function", "function": {"name": request.tool_name}}
        return self.grammars.tool_calls(tools.structural_tag, request.tools, choice, request.parallel_tool_calls)

    def _stream(
        self, job: Job, builder: ResponseBuilder, request: Request, echo: str, tools: ToolCallFormat | None
    ) -> Iterator[dict[str, Any]]:
        """Chunks of every choice as they come (choices interleave, each with its index and finish chunk),
        then the usage chunk if asked for. With tools, text that may start a call is held until it is one."""
        parsers = [ToolCallParser(tools) for _ in range(request.n)] if tools is not None else []
        try:
            for index in range(request.n):
                if builder.chat:
                    yield builder.chunk(None, role=True, index=index)
                elif echo:
                    yield builder.chunk(echo, index=index)
            gens: dict[int, Generation] = {}
            for event in self.scheduler.events(job):
                if event[0] == "delta":
                    _, index, text, entries = event
                    if not parsers:
                        yield builder.chunk(text, index=index, logprobs=entries)
                        continue
                    yield from self._tool_chunks(builder, index, parsers[index], parsers[index].push(text), entries)
                else:
                    _, index, gens[index] = event
                    reason = gens[index].finish_reason
                    if parsers:
                        yield from self._tool_chunks(builder, index, parsers[index], parsers[index].flush(), None)
                        reason = "tool_calls" if parsers[index].calls and reason == "stop" else reason
                    yield builder.chunk(None if builder.chat else "", reason, index=index)
            if request.include_usage:
                yield builder.usage_chunk(_usage(gens))
        finally:
            self.scheduler.abort(job)

    @staticmethod
    def _tool_chunks(
        builder: ResponseBuilder, index: int, parser: ToolCallParser, items: list[tuple[str, Any]], entries: Any
    ) -> Iterator[dict[str, Any]]:
        """The chunks of one choice's parsed text: content, and each call as its deltas; the tokens' logprobs
        ride on the first (or on an empty chunk when the text is held)."""
        for kind, value in items:
            if kind == "content":
                yield builder.chunk(value, index=index, logprobs=entries)
            else:
                position = parser.calls.index(value)
                for delta in call_deltas(position, value):
                    yield builder.chunk(None, index=index, logprobs=entries, tool_calls=[delta])
                    entries = None
            entries = None
        if entries:
            yield builder.chunk(None, index=index, logprobs=entries)


def _pages(tokens: int) -> int:
    return -(-tokens // PAGE_SIZE)


def _usage(gens: dict[int, Generation]) -> dict[str, Any]:
    """Usage of a request: its prompt once (with the tokens the first choice took from the prefix cache), the
    tokens of all its choices."""
    every = list(gens.values())
    completion = sum(g.completion_tokens for g in every)
    return usage(gens[0].prompt_tokens, completion, stats(every), cached_tokens=gens[0].cached_tokens)


class _Creator:
    def __init__(self, engine: Engine, chat: bool) -> None:
        self._engine, self._chat = engine, chat

    def create(self, **body: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        parse = parse_chat_request if self._chat else parse_completion_request
        return self._engine.create(parse(body, self._engine.model.defaults))


@dataclass
class _Chat:
    completions: _Creator
