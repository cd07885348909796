"""Grammar-constrained decoding with xgrammar: ``response_format`` JSON and tool calls.

A request's grammar is compiled once (JSON Schema, any JSON object, or a model's tool-call structural tag); each
of its sequences walks it with its own matcher, which gives a bitmask of the tokens allowed next (32 tokens an
int32, the layout of the model library's ``apply_bitmask_inplace``). Masked tokens get float32's lowest value, as
that kernel writes, so sampling, penalties and logprobs work on the masked logits unchanged.

xgrammar (and torch, which it needs) is the optional extra ``structured``; without it, requests that need a
grammar are refused with a ``MissingDependencyError`` naming the extra.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from webbuild.errors import InvalidRequestError, MissingDependencyError

if TYPE_CHECKING:
    import xgrammar

LOWEST = np.finfo(np.float32).min
EXTRA = "structured"
# xgrammar's C++ errors start with "[hh:mm:ss] /path/file.cc:123: "; the rest is for the user.
_CPP_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: (Check failed: \(.*?\) is false: )?")


def _xgrammar(feature: str, param: str) -> Any:
    try:
        import xgrammar
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs grammar-constrained decoding, and this server lacks its package (xgrammar).",
            tip=f"pip install 'webbuild-llm[{EXTRA}]' on the server, then restart it.",
            param=param,
        ) from exc
    return xgrammar


def json_safe(schema: Any) -> Any:
    """``schema`` with every length-limited string (``minLength``/``maxLength``, no pattern of its own) given
    as a pattern of characters instead: xgrammar 0.2.8 turns such lengths into a rule that lets raw control
    characters into the string, which is not JSON, and its character classes take surrogates and overlong 3- and
    4-byte UTF-8 as one character (each decodes to several U+FFFD, past the length). The pattern keeps the output
    valid JSON and valid against the schema: characters from space to U+07FF, no quote or backslash (one- and
    two-byte UTF-8, which xgrammar checks exactly)."""
    if isinstance(schema, list):
        return [json_safe(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: json_safe(value) for key, value in schema.items()}
    lengths = ("minLength", "maxLength")
    if out.get("type") == "string" and any(k in out for k in lengths) and not {"pattern", "format"} & set(out):
        low, high = int(out.pop("minLength", 0)), out.pop("maxLength", None)
        out["pattern"] = rf"^[ !#-\[\]-\u07ff]{{{low},{'' if high is None else int(high)}}}$"
    return out


def _message(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _CPP_PREFIX.sub("", first)


class Grammars:
    """Compiles the grammars of one model's requests (tokenizer facts read once, on the first use)."""

    def __init__(self, tokenizer_json: str, vocab_size: int, stop_token_ids: Iterable[int]) -> None:
        self._tokenizer_json, self._vocab_size = tokenizer_json, vocab_size
        self._stop_token_ids = sorted(stop_token_ids)
        self._compiler: xgrammar.GrammarCompiler | None = None
        self._lock = threading.Lock()

    def _get_compiler(self, xgr: Any) -> xgrammar.GrammarCompiler:
        with self._lock:
            if self._compiler is None:
                from tokenizers import Tokenizer
                from transformers import PreTrainedTokenizerFast

                hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(self._tokenizer_json))
                info = xgr.TokenizerInfo.from_huggingface(
                    hf, vocab_size=self._vocab_size, stop_token_ids=self._stop_token_ids or None
                )
                self._compiler = xgr.GrammarCompiler(info)
            return self._compiler

    def response_format(self, fmt: dict[str, Any]) -> Constraint:
        """``{"type": "json_object"}`` or ``{"type": "json_schema", "schema": ...}`` (a request's parsed
        ``response_format``); a schema xgrammar cannot take is a 400 on ``response_format``."""
        xgr = _xgrammar(f"response_format {fmt['type']}", "response_format")
        compiler = self._get_compiler(xgr)
        schema = fmt.get("schema")
        try:
            if schema is None:  # json_object: any object (xgrammar's builtin JSON grammar also takes arrays)
                compiled = compiler.compile_json_schema({"type": "object"}, any_whitespace=False, strict_mode=False)
            else:
                compiled = compiler.compile_json_schema(json_safe(schema), any_whitespace=False, strict_mode=True)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidRequestError(
                f"response_format.json_schema.schema is not a JSON Schema this engine can follow: {_message(exc)}",
                param="response_format",
            ) from exc
        return Constraint(compiled)

    def tool_calls(
        self, structural_tag: str, tools: list[dict[str, Any]], tool_choice: Any, parallel: bool
    ) -> Constraint:
        """The calls of a model whose format xgrammar names ``structural_tag`` ("qwen_3", "llama"), each call's
        arguments following its tool's ``parameters``; ``tool_choice`` as OpenAI's. A reasoning block
        (``<think>``) may open an ``auto`` answer only: where a call is due, it comes first."""
        xgr = _xgrammar("tools", "tools")
        compiler = self._get_compiler(xgr)
        try:
            tag = xgr.get_model_structural_tag(
                structural_tag,
                tools=json_safe(tools),
                tool_choice=tool_choice,
                reasoning="auto" if tool_choice == "auto" else "disabled",
                parallel_tool_calls=parallel,
            )
            compiled = compiler.compile_structural_tag(tag)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidRequestError(
                f"the tools' parameters are not JSON Schemas this engine can follow: {_message(exc)}", param="tools"
            ) from exc
        return Constraint(compiled)


class Constraint:
    """A compiled grammar; ``matcher()`` starts one sequence's walk through it."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def matcher(self) -> Matcher:
        return Matcher(self.compiled)


class Matcher:
    """One sequence's position in its grammar: ``mask`` the logits of the next token, then ``accept`` it."""

    def __init__(self, compiled: Any) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)
        vocab = compiled.tokenizer_info.vocab_size
        self._bitmask = xgr.allocate_token_bitmask(1, vocab)
        self._vocab = vocab

    def bitmask(self) -> np.ndarray:
        """int32 words, bit ``t % 32`` of word ``t // 32`` set if token ``t`` may come next."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        return self._bitmask.numpy()[0]

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with the tokens the grammar forbids at float32's lowest value."""
        allowed = allowed_tokens(self.bitmask(), logits.size)
        return np.where(allowed, logits, LOWEST).astype(np.float32)

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(token):
            raise RuntimeError(f"token {token} was sampled against the grammar")  # a bug: masking let it through

    @property
    def terminated(self) -> bool:
        return bool(self._matcher.is_terminated())


def allowed_tokens(bitmask: np.ndarray, vocab: int) -> np.ndarray:
    """The bitmask as one bool per token: what the compiled ``apply_bitmask_inplace`` reads."""
    bits = np.unpackbits(bitmask.astype("<i4").view(np.uint8), bitorder="little")
    return bits[:vocab].astype(bool)
