"""Builds ``mlc-chat-config.json`` (version 0.1.0), so a bundle also loads in WebLLM and MLC tools.

Our own runtime renders the model's HF chat template (tokenizer_config.json); the ``conv_template`` here
is the MLC-style equivalent, filled for compatibility: ChatML when the HF template is ChatML, a plain
``User: / Assistant:`` fallback otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from webbuild import _log
from webbuild.engine.chat_template import ChatTemplate
from webbuild.errors import WebbuildError
from webbuild.site_format import CHAT_CONFIG_JSON

CHAT_CONFIG_VERSION = "0.1.0"

# HF config.json keys that describe the checkpoint or generation, not the architecture.
_NON_ARCH_KEYS = frozenset(
    {
        "architectures",
        "auto_map",
        "bos_token_id",
        "dtype",
        "eos_token_id",
        "pad_token_id",
        "quantization_config",
        "torch_dtype",
        "transformers_version",
        "use_cache",
        "_name_or_path",
    }
)

_ROLE_TEMPLATES = {"user": "{user_message}", "assistant": "{assistant_message}", "tool": "{tool_message}"}


@dataclass
class ConvTemplate:
    """MLC's conversation template fields (what WebLLM's ``conv_template`` parser reads)."""

    name: str
    system_template: str
    system_message: str
    roles: dict[str, str]
    seps: list[str]
    role_content_sep: str
    role_empty_sep: str
    stop_str: list[str]
    stop_token_ids: list[int]
    system_prefix_token_ids: list[int] | None = None
    add_role_after_system_message: bool = True
    role_templates: dict[str, str] = field(default_factory=lambda: dict(_ROLE_TEMPLATES))
    messages: list[Any] = field(default_factory=list)
    function_string: str = ""
    use_function_calling: bool = False


def _token_str(value: Any) -> str | None:
    """tokenizer_config tokens are strings or (older files) ``{"content": ...}`` objects."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template_text(tokenizer_config: dict[str, Any]) -> str:
    tpl = tokenizer_config.get("chat_template") or ""
    if isinstance(tpl, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template", "") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default") or next(iter(named.values()), "")
    return tpl if isinstance(tpl, str) else ""


class _Vocab:
    """Token string -> id, from tokenizer.json (added/special tokens first, then the model vocab)."""

    def __init__(self, tokenizer_json: str | None) -> None:
        self.decoder: Any = None
        self.ids: dict[str, int] = {}
        self.added: set[str] = set()  # tokens matched whole in the text: a template writing one writes its id
        if not tokenizer_json:
            return
        doc = json.loads(tokenizer_json)
        self.decoder = doc.get("decoder")
        vocab = (doc.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            self.ids.update({k: int(v) for k, v in vocab.items()})
        for tok in doc.get("added_tokens") or []:
            self.ids[tok["content"]] = int(tok["id"])
            self.added.add(tok["content"])

    def get(self, token: str | None) -> int | None:
        return self.ids.get(token) if token is not None else None

    def postproc_method(self) -> str:
        """MLC's name for how token strings map to bytes: GPT-2 byte-level, or SentencePiece byte fallback."""
        if self.decoder is None:
            return "byte_level"
        parts = self.decoder.get("decoders") or [self.decoder]
        kinds = {p.get("type") for p in parts if isinstance(p, dict)}
        if "ByteLevel" in kinds:
            return "byte_level"
        return "byte_fallback" if "ByteFallback" in kinds else "byte_level"


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def _dedupe(ids: list[int | None]) -> list[int]:
    return list(dict.fromkeys(i for i in ids if i is not None))


_CHATML_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)([^<{}'\"]*?)<\|im_end\|>")


def _is_chatml(template: str) -> bool:
    return "<|im_start|>" in template and "<|im_end|>" in template


def conv_template(tokenizer_config: dict[str, Any], stop_ids: list[int], vocab: _Vocab | None = None) -> ConvTemplate:
    """Derives the MLC conversation template from the HF chat template text; ``stop_ids`` end a reply."""
    vocab = vocab or _Vocab(None)
    template = _chat_template_text(tokenizer_config)
    if _is_chatml(template):
        found = _CHATML_SYSTEM.search(template)
        system = found.group(1).replace("\\n", "\n") if found else "You are a helpful assistant."
        stop_str = ["<|im_end|>"]
        return ConvTemplate(
            name="chatml",
            system_template="<|im_start|>system\n{system_message}<|im_end|>\n",
            system_message=system,
            roles={
                "user": "<|im_start|>user",
                "assistant": "<|im_start|>assistant",
                "tool": "<|im_start|>user",
            },
            seps=["<|im_end|>\n"],
            role_content_sep="\n",
            role_empty_sep="\n",
            stop_str=stop_str,
            stop_token_ids=_dedupe([*stop_ids, *(vocab.get(s) for s in stop_str)]),
        )
    bos = vocab.get(_token_str(tokenizer_config.get("bos_token")))
    prefix = [bos] if tokenizer_config.get("add_bos_token") and bos is not None else None
    return ConvTemplate(
        name="generic",
        system_template="{system_message}",
        system_message="",
        roles={"user": "User", "assistant": "Assistant", "tool": "User"},
        seps=["\n"],
        role_content_sep=": ",
        role_empty_sep=":",
        stop_str=[],
        stop_token_ids=_dedupe(list(stop_ids)),
        system_prefix_token_ids=prefix,
        add_role_after_system_message=True,
    )


# Texts that close a turn, among those llama.cpp ends generation at by name (src/llama-vocab.cpp): Llama 3's
# <|eot_id|> (<|eom_id|> after a tool call), ChatML's <|im_end|> (Qwen, SmolLM2), Gemma's <end_of_turn>, Phi-3's
# <|end|>, and <|endoftext|> and <EOT>, with which some other templates close a reply.
END_OF_TURN_MARKERS = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<EOT>")
_PROBE_REPLY = "webbuild-probe-reply"


def end_of_turn_id(tokenizer_config: dict[str, Any], vocab: _Vocab) -> int | None:
    """The token the chat template closes an assistant's reply with, when that token is an end-of-turn marker.

    A file may name only the end of the text as eos while the model closes each reply with its turn marker (a
    Gemma 3 instruct GGUF: eos ``<eos>``, no eot id, replies end with ``<end_of_turn>``): without this stop a
    reply runs on to max_tokens. llama.cpp stops at any token whose text is a known marker; here the template
    must confirm it too, because a stop the model writes inside a reply cuts the reply short. So the template
    renders a user message and a reply, and the token written right after the reply (whitespace aside) is
    taken when (1) its text is a known marker: a template may also write other tokens after a reply (a tool call
    or channel closer, after which the model goes on), and (2) the tokenizer matches it whole, so that the model
    was trained on that one id. A template that cannot render the pair, or closes replies with plain text, gives
    no token; so does a marker the vocabulary holds but the template does not close replies with.
    """
    if not _chat_template_text(tokenizer_config):
        return None
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE_REPLY}]
    try:
        text = ChatTemplate(tokenizer_config).render(messages, add_generation_prompt=False)
    except (TemplateError, WebbuildError) as exc:
        _log.detail(f"the chat template does not render a reply ({exc}); no end-of-turn token is read from it")
        return None
    at = text.rfind(_PROBE_REPLY)
    after = text[at + len(_PROBE_REPLY) :].lstrip() if at >= 0 else ""
    marker = next((m for m in END_OF_TURN_MARKERS if after.startswith(m) and m in vocab.added), None)
    return vocab.ids[marker] if marker else None


def tool_call_format(tokenizer_config: dict[str, Any]) -> str | None:
    """How the model writes tool calls, as its HF chat template teaches it (a key of
    ``webbuild.engine.tool_calls.FORMATS``), or None when the template shows the model no tools."""
    template = _chat_template_text(tokenizer_config)
    if not re.search(r"\btools\b", template):
        return None
    if "<tool_call>" in template:
        return "hermes"
    if "<|start_header_id|>" in template and '"parameters"' in template:
        return "llama3_json"
    return None


def build_chat_config(
    config: dict[str, Any],
    tokenizer_config: dict[str, Any],
    *,
    generation_config: dict[str, Any] | None = None,
    quantization: str,
    quantization_policy: dict[str, str] | None = None,
    context_window_size: int,
    prefill_chunk_size: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    model_type: str | None = None,
    tokenizer_json: str | None = None,
    max_batch_size: int = 1,
) -> dict[str, Any]:
    """The ``mlc-chat-config.json`` document for a model (HF ``config``/``tokenizer_config``/``generation_config``
    dicts).

    The tokens that end a reply are decided here, for every source: ``eos_token_id`` lists the ids the files
    declare (config.json's, then generation_config.json's, which is what transformers' ``generate()`` stops at:
    Phi-3 adds ``<|end|>`` there, Qwen2.5 ``<|endoftext|>``), else the tokenizer's eos token;
    ``conv_template.stop_token_ids`` adds the end-of-turn token the chat template closes replies with
    (``end_of_turn_id``). ``tokenizer_json`` (the tokenizer.json text) lets special tokens such as ``<|im_end|>``
    resolve to ids and tells byte-level from byte-fallback tokenizers; without it, ids come from the configs only.
    """
    vocab = _Vocab(tokenizer_json)
    model_type = model_type or str(config.get("model_type", ""))

    declared = _dedupe(
        [*_as_id_list(config.get("eos_token_id")), *_as_id_list((generation_config or {}).get("eos_token_id"))]
    )
    eos_ids = _dedupe([*declared, vocab.get(_token_str(tokenizer_config.get("eos_token")))])
    stop_ids = _dedupe([*eos_ids, end_of_turn_id(tokenizer_config, vocab)])
    bos_id = config.get("bos_token_id")
    if bos_id is None:
        bos_id = vocab.get(_token_str(tokenizer_config.get("bos_token")))
    pad_id = config.get("pad_token_id")
    if pad_id is None:
        pad_id = vocab.get(_token_str(tokenizer_config.get("pad_token")))
    ends = declared or eos_ids
    eos_value = ends[0] if len(ends) == 1 else (ends or None)

    model_config = {k: v for k, v in config.items() if k not in _NON_ARCH_KEYS}
    if "head_dim" not in model_config and config.get("hidden_size") and config.get("num_attention_heads"):
        model_config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    if "rope_theta" in config:
        model_config.setdefault("position_embedding_base", config["rope_theta"])
    model_config.update(
        context_window_size=context_window_size,
        prefill_chunk_size=prefill_chunk_size,
        tensor_parallel_shards=1,
        max_batch_size=max_batch_size,
    )

    return {
        "version": CHAT_CONFIG_VERSION,
        "model_type": model_type,
        "quantization": quantization,
        # Ours, beside MLC's fields: the layout of each kind of weight (docs/quantization.md); readers that do
        # not know it ignore it, as the layouts live in the model library.
        **({"quantization_policy": quantization_policy} if quantization_policy else {}),
        "model_config": model_config,
        "vocab_size": config.get("vocab_size"),
        "context_window_size": context_window_size,
        "sliding_window_size": -1,
        "prefill_chunk_size": prefill_chunk_size,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "temperature": temperature,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "top_p": top_p,
        "tokenizer_files": ["tokenizer.json"],
        "tokenizer_info": {
            "token_postproc_method": vocab.postproc_method(),
            "prepend_space_in_encode": False,
            "strip_space_in_decode": False,
        },
        "conv_template": asdict(conv_template(tokenizer_config, stop_ids, vocab)),
        # Ours: the tool-call format of the chat template (engine/tool_calls.py), or null without tool support.
        "tool_call_format": tool_call_format(tokenizer_config),
        "pad_token_id": pad_id if pad_id is not None else 0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_value,
    }


def write_chat_config(out_dir: str | Path, chat_config: dict[str, Any]) -> Path:
    """Writes ``mlc-chat-config.json`` into ``out_dir`` and returns its path."""
    path = Path(out_dir) / CHAT_CONFIG_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chat_config, indent=2, ensure_ascii=False) + "\n")
    return path
