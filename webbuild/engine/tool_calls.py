"""Tool calls in a model's output: the formats chat templates teach, parsed into OpenAI's ``tool_calls``.

A model's format is a fact of its chat template, found when the chat config is built
(``webbuild.build.chat_config.tool_call_format``) and stored there as ``tool_call_format``. Each format here
names the xgrammar structural tag that constrains its calls, the text that starts a call, and how calls end.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCallFormat:
    structural_tag: str  # xgrammar's name for the format (get_model_structural_tag)
    trigger: str  # the text every call starts with
    end: str | None  # the text every call ends with; None: the call is one JSON object
    arguments_key: str


FORMATS: dict[str, ToolCallFormat] = {
    # Qwen2.5, Qwen3, Hermes: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
    "hermes": ToolCallFormat("qwen_3", "<tool_call>", "</tool_call>", "arguments"),
    # Llama 3.1-3.3: {"name": ..., "parameters": {...}}
    "llama3_json": ToolCallFormat("llama", '{"name"', None, "parameters"),
}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(fmt: ToolCallFormat, text: str) -> tuple[dict[str, Any], int] | None:
    """The call starting at ``text[0]`` (its trigger) and the length of its text, or None if incomplete."""
    start, end = (len(fmt.trigger), text.find(fmt.end)) if fmt.end else (0, -1)
    body = text[start:end] if fmt.end else text
    if fmt.end and end < 0:
        return None
    try:
        obj, used = json.JSONDecoder().raw_decode(body.strip() if fmt.end else body)
    except ValueError:
        return None
    if not (isinstance(obj, dict) and isinstance(obj.get("name"), str)):
        return None
    arguments = obj.get(fmt.arguments_key, {})
    call = {
        "id": new_call_id(),
        "type": "function",
        "function": {"name": obj["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
    return call, (end + len(fmt.end)) if fmt.end else used


@dataclass
class ToolCallParser:
    """Splits a choice's text, fed piece by piece, into content and calls. ``push`` returns what can be shown
    now: ``("content", text)`` and ``("call", call)`` items; text that may start a call is held until known."""

    fmt: ToolCallFormat
    calls: list[dict[str, Any]] = field(default_factory=list)
    _held: str = ""

    def push(self, text: str) -> list[tuple[str, Any]]:
        self._held += text
        out: list[tuple[str, Any]] = []
        while self._held:
            at = self._held.find(self.fmt.trigger)
            if at < 0:
                keep = _partial_suffix(self._held, self.fmt.trigger)
                self._content(out, self._held[: len(self._held) - keep])
                self._held = self._held[len(self._held) - keep :]
                break
            self._content(out, self._held[:at])
            self._held = self._held[at:]
            found = _call(self.fmt, self._held)
            if found is None:
                break
            call, used = found
            self.calls.append(call)
            out.append(("call", call))
            self._held = self._held[used:]
        return out

    def flush(self) -> list[tuple[str, Any]]:
        """At the end: held text that never became a call is content."""
        out: list[tuple[str, Any]] = []
        self._content(out, self._held)
        self._held = ""
        return out

    def _content(self, out: list[tuple[str, Any]], text: str) -> None:
        # Whitespace between and after calls is the format's, not the model's answer.
        if text and not (self.calls and not text.strip()):
            out.append(("content", text))


def _partial_suffix(text: str, trigger: str) -> int:
    """Length of the longest end of ``text`` that starts ``trigger``."""
    for k in range(min(len(text), len(trigger) - 1), 0, -1):
        if trigger.startswith(text[-k:]):
            return k
    return 0


def split_tool_calls(fmt: ToolCallFormat, text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """A whole choice's content (None when it only called tools) and its calls."""
    parser = ToolCallParser(fmt)
    items = parser.push(text) + parser.flush()
    content = "".join(value for kind, value in items if kind == "content")
    if parser.calls:
        return (content.strip() or None), parser.calls
    return content, []


def call_deltas(index: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    """A call as OpenAI streams it: its ``index`` among the choice's calls with id, type and name (arguments
    empty), then the arguments."""
    head = {
        "index": index,
        "id": call["id"],
        "type": "function",
        "function": {"name": call["function"]["name"], "arguments": ""},
    }
    return [head, {"index": index, "function": {"arguments": call["function"]["arguments"]}}]
