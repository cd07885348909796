"""``webbuild chat``: a terminal chat on the Python engine, with slash commands and streamed replies.

The loop takes its input function and output stream as arguments, so tests drive it with scripted lines and
a fake engine; only ``chat()`` touches the real terminal and loads a model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

from webbuild import _log
from webbuild.engine.request import parse_chat_request
from webbuild.errors import InvalidRequestError, WebbuildError

PROMPT = ">>> "
CONTINUATION = "... "
BLOCK = '"""'

HELP = f"""commands:
  /help                 this text
  /stats                prefill and decode speed of the last reply, prompt tokens reused from the KV cache
  /reset                forget the conversation (the system prompt stays)
  /set KEY=VALUE;...    change sampling, e.g. /set temperature=0.5;top_p=0.9;max_tokens=100;stop=a,b
                        keys: temperature (0-2), top_p (0-1), max_tokens (>= 1), seed (integer),
                        stop (up to 4 strings, comma-separated; \\, \\; \\n escape a comma, semicolon, newline);
                        an empty value (max_tokens=) restores the default; /set alone shows the settings
  /exit                 quit (also /quit or Ctrl-D)
multi-line input:
  end a line with \\ to continue on the next one, or put the text between {BLOCK} lines:
    {BLOCK}
    first line
    second line
    {BLOCK}
Ctrl-C stops a reply (the chat goes on); Ctrl-C at the prompt clears the line."""


class ChatEngine(Protocol):
    """What the chat needs of ``webbuild.Engine``: ``chat.completions.create(...)``."""

    chat: Any


@dataclass
class Settings:
    """Sampling fields sent with every request; ``None`` (or no stops) leaves the model's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def request_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stop"}
        out = {k: v for k, v in out.items() if v is not None}
        if self.stop:
            out["stop"] = list(self.stop)
        return out

    def validated(self) -> Settings:
        """Itself, once the engine's request parser accepts it (same ranges as the REST API and browser)."""
        parse_chat_request({"messages": [{"role": "user", "content": "x"}], **self.request_fields()})
        return self

    def describe(self) -> str:
        def show(value: Any) -> str:
            return "default" if value is None else repr(value) if isinstance(value, str) else str(value)

        stops = ", ".join(repr(s) for s in self.stop) or "none"
        parts = [f"{f.name}={show(getattr(self, f.name))}" for f in fields(self) if f.name != "stop"]
        return "  ".join([*parts, f"stop={stops}"])


_NUMBERS: dict[str, type] = {"temperature": float, "top_p": float, "max_tokens": int, "seed": int}
_ESCAPES = {"n": "\n", "t": "\t"}


def _split(text: str, sep: str) -> list[str]:
    """Splits on ``sep`` except where a backslash escapes it; escapes stay for ``_unescape``."""
    parts, current, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_set(text: str, current: Settings) -> Settings:
    """``temperature=0.5;stop=a,b`` applied to a copy of ``current``; raises InvalidRequestError and changes
    nothing when any key or value is bad, so a typo never leaves half the settings applied."""
    changes: dict[str, Any] = {}
    for item in _split(text, ";"):
        if not item.strip():
            continue
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise InvalidRequestError(f"expected KEY=VALUE, got {item.strip()!r}", param=key)
        if key == "stop":
            changes["stop"] = [_unescape(s) for s in _split(raw, ",") if s]
            continue
        if key not in _NUMBERS:
            known = ", ".join([*_NUMBERS, "stop"])
            raise InvalidRequestError(f"unknown setting {key!r}; settable: {known}", param=key)
        raw = raw.strip()
        if not raw:
            changes[key] = None
            continue
        kind = _NUMBERS[key]
        try:
            changes[key] = kind(raw)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise InvalidRequestError(f"{key} must be {what}, got {raw!r}", param=key) from None
    return replace(current, **changes).validated()


@dataclass
class ChatSession:
    """One conversation: reads lines with ``input_fn`` (which raises EOFError on Ctrl-D), writes to ``out``."""

    engine: ChatEngine
    input_fn: Callable[[str], str] = input
    out: TextIO = field(default_factory=lambda: sys.stdout)
    settings: Settings = field(default_factory=Settings)
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    last_usage: dict[str, Any] | None = None
    last_stopped: bool = False

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.last_usage, self.last_stopped = None, False

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def run(self) -> None:
        """The loop, until /exit or end of input."""
        self.write("type a message, /help for commands, /exit or Ctrl-D to quit\n")
        while True:
            try:
                text, literal = self.read_message()
            except KeyboardInterrupt:  # clears what was typed, as a shell does
                self.write("\n")
                continue
            except EOFError:
                self.write("\n")
                return
            if literal:
                self.send(text)
            elif text.strip() and not self.handle(text):
                return

    def read_message(self) -> tuple[str, bool]:
        """One message, possibly multi-line (trailing backslash, or a block between triple-quote lines), and
        whether it was a block: a block is always text for the model, even when it starts with a slash."""
        line = self.input_fn(PROMPT)
        if line.lstrip().startswith(BLOCK):
            first = line.lstrip()[len(BLOCK) :]
            if first.rstrip().endswith(BLOCK):  # """one line"""
                return first.rstrip()[: -len(BLOCK)], True
            lines = [first] if first.strip() else []
            while True:
                line = self.input_fn(CONTINUATION)
                if line.rstrip().endswith(BLOCK):
                    last = line.rstrip()[: -len(BLOCK)]
                    return "\n".join([*lines, last] if last.strip() else lines), True
                lines.append(line)
        lines = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = self.input_fn(CONTINUATION)
        return "\n".join([*lines, line]), False

    def handle(self, text: str) -> bool:
        """Runs a command or sends a message; False means quit."""
        if not text.startswith("/"):
            self.send(text)
            return True
        command, arg = [*text.split(None, 1), ""][:2]
        if command in ("/exit", "/quit"):
            return False
        if command == "/help":
            self.write(HELP + "\n")
        elif command == "/reset":
            self.reset()
            self.write("conversation cleared\n")
        elif command == "/stats":
            self.write(self.stats_text() + "\n")
        elif command == "/set":
            if not arg.strip():
                self.write(self.settings.describe() + "\n")
                return True
            try:
                self.settings = parse_set(arg.strip(), self.settings)
            except WebbuildError as exc:
                self.write(f"not changed: {exc.message}\n")
            else:
                self.write(self.settings.describe() + "\n")
        else:
            self.write(f"unknown command {command}; /help lists the commands\n")
        return True

    def stats_text(self) -> str:
        if self.last_stopped:
            return "the last reply was stopped before it finished; no statistics"
        if self.last_usage is None:
            return "no reply yet"
        extra = self.last_usage.get("extra") or {}
        cached = (self.last_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        return (
            f"prefill: {extra.get('prefill_tokens_per_s', 0.0):.1f} tok/s ({self.last_usage['prompt_tokens']} "
            f"tokens, {cached} reused from the KV cache), decode: {extra.get('decode_tokens_per_s', 0.0):.1f} tok/s "
            f"({self.last_usage['completion_tokens']} tokens), "
            f"first token after {extra.get('time_to_first_token_s', 0.0):.2f} s"
        )

    def send(self, text: str) -> None:
        """Streams the reply to ``text``; the turn joins the history unless it failed or was stopped before any
        text (a stopped reply keeps what was shown)."""
        self.messages.append({"role": "user", "content": text})
        try:
            stream = self.engine.chat.completions.create(
                messages=list(self.messages),
                stream=True,
                stream_options={"include_usage": True},
                **self.settings.request_fields(),
            )
        except WebbuildError as exc:
            self.messages.pop()
            self._error(exc)
            return
        reply: list[str] = []
        finish: str | None = None
        try:
            finish = self._print_stream(stream, reply)
        except KeyboardInterrupt:
            stream.close()  # aborts the generation; the chat goes on
            self.write("\n[stopped]\n")
            self.last_usage, self.last_stopped = None, True
            if not reply:  # stopped before any text: the question was never answered, so forget it
                self.messages.pop()
                return
        except WebbuildError as exc:
            stream.close()
            self.write("\n")
            self.messages.pop()
            self._error(exc)
            return
        else:
            self.write("\n")
            if finish == "length":
                self.write("[reply cut at max_tokens or the context window]\n")
        self.messages.append({"role": "assistant", "content": "".join(reply)})

    def _print_stream(self, stream: Iterator[dict[str, Any]], reply: list[str]) -> str | None:
        finish = None
        for chunk in stream:
            if chunk.get("usage") is not None:
                self.last_usage, self.last_stopped = chunk["usage"], False
            for choice in chunk.get("choices") or []:
                content = choice.get("delta", {}).get("content")
                if content:
                    reply.append(content)
                    self.write(content)
                finish = choice.get("finish_reason") or finish
        return finish

    def _error(self, exc: WebbuildError) -> None:
        self.write(f"error: {exc.message}\n")
        if exc.tip:
            self.write(f"tip: {exc.tip}\n")
        elif exc.code == "context_length_exceeded":
            self.write("tip: /reset starts a new conversation\n")


@dataclass
class ChatOptions:
    model: str | Path
    device: str = "cpu"
    quantization: str | None = None
    settings: Settings = field(default_factory=Settings)
    system: str | None = None


def chat(options: ChatOptions, input_fn: Callable[[str], str] | None = None, out: TextIO | None = None) -> None:
    """Loads the model on ``options.device`` (one user: the engine's interactive mode) and runs the chat on the
    terminal, or on ``input_fn``/``out`` when given."""
    settings = options.settings.validated()  # a bad --temperature fails before the slow model load
    _log.step(
        f"loading {options.model} on the {options.device} engine (its first use compiles it for this machine, "
        "which can take minutes)"
    )
    t0 = time.monotonic()
    from webbuild.engine.engine import Engine, EngineConfig  # imports TVM: seconds, after saying what is going on

    engine = Engine(options.model, options.device, options.quantization, config=EngineConfig(mode="interactive"))
    _log.step(f"ready ({time.monotonic() - t0:.1f} s)")
    if input_fn is None:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:  # not on every platform; plain input() still works
            pass
        input_fn = input
    ChatSession(engine, input_fn, out or sys.stdout, settings, options.system).run()
