"""`webbuild chat`: slash commands, multi-line input, streamed replies and history, driven by scripted lines."""

from __future__ import annotations

import io
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from webbuild.cli import main
from webbuild.commands.chat import HELP, ChatSession, Settings, parse_set
from webbuild.engine.request import parse_chat_request
from webbuild.errors import ContextLengthExceededError, InvalidRequestError

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 9},
    "extra": {"prefill_tokens_per_s": 240.5, "decode_tokens_per_s": 31.25, "time_to_first_token_s": 0.05},
}


def _chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class Stream:
    """What ``create(stream=True)`` returns: chunks, then optionally a Ctrl-C while waiting for the next one."""

    def __init__(self, chunks: list[dict[str, Any]], interrupt_after: int | None = None) -> None:
        self.chunks, self.interrupt_after, self.closed, self.read = chunks, interrupt_after, False, 0

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.read == self.interrupt_after:
            raise KeyboardInterrupt
        if self.read >= len(self.chunks):
            raise StopIteration
        self.read += 1
        return self.chunks[self.read - 1]

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """Replies with ``replies`` in turn (each streamed in two pieces), checking requests as the engine does."""

    def __init__(self, *replies: str, finish: str = "stop", interrupt_after: int | None = None) -> None:
        self.replies, self.finish, self.interrupt_after = list(replies), finish, interrupt_after
        self.requests: list[dict[str, Any]] = []
        self.streams: list[Stream] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **body: Any) -> Stream:
        parse_chat_request(body)  # raises InvalidRequestError as the real engine would
        self.requests.append(body)
        text = self.replies.pop(0) if self.replies else "ok"
        half = len(text) // 2
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
        chunks += [_chunk(text[:half]), _chunk(text[half:]), _chunk(finish=self.finish)]
        chunks.append({"object": "chat.completion.chunk", "choices": [], "usage": USAGE})
        self.streams.append(Stream(chunks, self.interrupt_after))
        self.interrupt_after = None  # only the first reply is interrupted
        return self.streams[-1]


def scripted(*lines: str | type[BaseException]) -> tuple[Callable[[str], str], list[str]]:
    """An ``input`` that returns ``lines`` (raising the exception classes among them), then Ctrl-D."""
    queue, prompts = list(lines), []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        if not queue:
            raise EOFError
        line = queue.pop(0)
        if isinstance(line, type):
            raise line
        return line

    return read, prompts


def chat(engine: Any, *lines: str | type[BaseException], **kwargs: Any) -> tuple[ChatSession, str, list[str]]:
    read, prompts = scripted(*lines)
    out = io.StringIO()
    session = ChatSession(engine, read, out, **kwargs)
    session.run()
    return session, out.getvalue(), prompts


# --- conversation ------------------------------------------------------------------------------------------


def test_replies_stream_and_history_is_kept_across_turns():
    engine = FakeEngine("Hello there!", "Fine, thanks.")
    session, out, _ = chat(engine, "hi", "how are you?")
    assert "Hello there!\n" in out and "Fine, thanks.\n" in out
    assert engine.requests[0]["stream"] is True and engine.requests[0]["stream_options"] == {"include_usage": True}
    assert engine.requests[1]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "how are you?"},
    ]
    assert len(session.messages) == 4


def test_reset_forgets_the_conversation_but_keeps_the_system_prompt():
    engine = FakeEngine()
    _, out, _ = chat(engine, "one", "/reset", "two", system="Be brief.")
    assert "conversation cleared" in out
    assert engine.requests[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "two"},
    ]


def test_blank_lines_send_nothing():
    engine = FakeEngine()
    chat(engine, "", "   ")
    assert engine.requests == []


def test_a_cut_reply_says_so():
    _, out, _ = chat(FakeEngine("abc", finish="length"), "hi")
    assert "max_tokens" in out


# --- commands ----------------------------------------------------------------------------------------------


def test_help_lists_every_command_and_the_multiline_convention():
    _, out, _ = chat(FakeEngine(), "/help")
    for command in ("/help", "/stats", "/reset", "/set", "/exit", "Ctrl-D", '"""', "\\"):
        assert command in out
    assert HELP in out


def test_stats_show_prefill_and_decode_speed_and_reuse_of_the_last_reply():
    _, out, _ = chat(FakeEngine(), "/stats", "hi", "/stats")
    assert "no reply yet" in out
    assert "prefill: 240.5 tok/s (12 tokens, 9 reused from the KV cache)" in out
    assert "decode: 31.2 tok/s (3 tokens)" in out


@pytest.mark.parametrize("command", ["/exit", "/quit"])
def test_exit_stops_reading(command):
    engine = FakeEngine()
    _, _, prompts = chat(engine, command, "never sent")
    assert engine.requests == [] and len(prompts) == 1


def test_ctrl_d_ends_the_chat():
    _, _, prompts = chat(FakeEngine(), "hi")
    assert prompts == [">>> ", ">>> "]  # the second read got EOFError and the loop returned


def test_unknown_command_is_not_sent_to_the_model():
    engine = FakeEngine()
    _, out, _ = chat(engine, "/frobnicate")
    assert "unknown command /frobnicate" in out and engine.requests == []


def test_set_changes_the_sampling_of_later_requests():
    engine = FakeEngine()
    _, out, _ = chat(engine, "/set temperature=0.5;top_p=0.9;max_tokens=100;stop=a,b", "hi")
    request = engine.requests[0]
    assert (request["temperature"], request["top_p"], request["max_tokens"], request["stop"]) == (
        0.5,
        0.9,
        100,
        ["a", "b"],
    )
    assert "temperature=0.5" in out


def test_set_alone_shows_the_settings():
    _, out, _ = chat(FakeEngine(), "/set")
    assert "temperature=default" in out and "stop=none" in out


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("temperature=3", "temperature must be between 0 and 2"),
        ("top_p=abc", "top_p must be a number, got 'abc'"),
        ("max_tokens=0", "max_tokens must be at least 1"),
        ("max_tokens=1.5", "max_tokens must be an integer"),
        ("temprature=1", "unknown setting 'temprature'"),
        ("temperature", "expected KEY=VALUE"),
        ("stop=a,b,c,d,e", "stop takes at most 4"),
        ("temperature=0.1;top_p=2", "top_p must be between 0 and 1"),  # nothing applied, not even temperature
    ],
)
def test_a_bad_set_prints_why_and_changes_nothing(command, message):
    engine = FakeEngine()
    session, out, _ = chat(engine, "/set max_tokens=7", f"/set {command}", "hi")
    assert f"not changed: {message}" in out
    assert session.settings == Settings(max_tokens=7)
    assert "temperature" not in engine.requests[0] and engine.requests[0]["max_tokens"] == 7


def test_set_escapes_and_empty_values_restore_defaults():
    settings = parse_set(r"stop=\n,a\,b,x\;y;max_tokens=5", Settings())
    assert settings.stop == ["\n", "a,b", "x;y"] and settings.max_tokens == 5
    assert parse_set("max_tokens=;stop=", settings) == Settings()


def test_parse_set_raises_the_engines_error_type():
    with pytest.raises(InvalidRequestError):
        parse_set("seed=x", Settings())


# --- multi-line input --------------------------------------------------------------------------------------


def test_a_trailing_backslash_continues_the_message():
    engine = FakeEngine()
    _, _, prompts = chat(engine, "first\\", "second\\", "third")
    assert engine.requests[0]["messages"][-1]["content"] == "first\nsecond\nthird"
    assert prompts[:3] == [">>> ", "... ", "... "]


def test_triple_quotes_wrap_a_block():
    engine = FakeEngine()
    chat(engine, '"""', "def f():", "    return 1", '"""', '"""Also"""', '"""start', 'end"""')
    sent = [r["messages"][-1]["content"] for r in engine.requests]
    assert sent == ["def f():\n    return 1", "Also", "start\nend"]


def test_a_slash_command_inside_a_block_is_sent_as_text():
    engine = FakeEngine()
    chat(engine, '"""', "/reset is a command", '"""')
    assert engine.requests[0]["messages"][-1]["content"] == "/reset is a command"


# --- Ctrl-C and errors -------------------------------------------------------------------------------------


def test_ctrl_c_during_a_reply_aborts_it_and_the_chat_goes_on():
    engine = FakeEngine("abcdef", "second", interrupt_after=2)  # after the role chunk and "abc"
    session, out, _ = chat(engine, "hi", "/stats", "again")
    assert engine.streams[0].closed
    assert "abc\n[stopped]" in out
    assert "stopped before it finished" in out
    assert session.messages[1] == {"role": "assistant", "content": "abc"}  # what the user saw
    assert len(engine.requests) == 2 and "second\n" in out


def test_a_reply_stopped_before_any_text_leaves_no_turn():
    engine = FakeEngine("abcdef", interrupt_after=1)  # only the role chunk arrived
    session, out, _ = chat(engine, "hi")
    assert "[stopped]" in out and session.messages == []


def test_ctrl_c_at_the_prompt_clears_the_line():
    engine = FakeEngine()
    chat(engine, "abandoned\\", KeyboardInterrupt, "hi")
    assert [r["messages"][-1]["content"] for r in engine.requests] == ["hi"]


def test_an_engine_error_is_reported_and_the_turn_forgotten():
    class TooLong(FakeEngine):
        def create(self, **body: Any) -> Stream:
            if len(body["messages"]) > 2:
                raise ContextLengthExceededError("the prompt has 9000 tokens; this model's context window is 2048")
            return super().create(**body)

    engine = TooLong()
    session, out, _ = chat(engine, "one", "two", "/reset", "three")
    assert "error: the prompt has 9000 tokens" in out and "tip: /reset" in out
    assert session.messages == [{"role": "user", "content": "three"}, {"role": "assistant", "content": "ok"}]


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_chat_help_documents_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    out = capsys.readouterr().out
    for text in ("/stats", "/reset", "/set", "/exit", "--device", "--temperature", '"""'):
        assert text in out


def test_cli_rejects_a_bad_option_before_loading_the_model(capsys, tmp_path):
    code = main(["--quiet", "chat", str(tmp_path / "absent.gguf"), "--temperature", "5"])
    err = capsys.readouterr().err
    assert code == 1 and "temperature must be between 0 and 2" in err


def test_cli_chat_runs_the_interactive_engine(capsys, monkeypatch):
    made: list[tuple[Any, ...]] = []

    def fake_engine(model: str, device: str, quantization: str | None, config: Any) -> FakeEngine:
        made.append((model, device, quantization, config.mode))
        return engine

    engine = FakeEngine("hey")
    read, _ = scripted("hi", "/exit")
    monkeypatch.setattr("webbuild.engine.engine.Engine", fake_engine)
    monkeypatch.setattr("builtins.input", read)
    code = main(["--quiet", "chat", "some-model", "--device", "cuda", "-q", "q0f32", "--max-tokens", "9"])
    assert code == 0
    assert made == [("some-model", "cuda", "q0f32", "interactive")]
    assert engine.requests[0]["max_tokens"] == 9 and "hey" in capsys.readouterr().out


def test_cli_chat_says_what_it_loads_before_the_slow_load(capsys, monkeypatch):
    said_before: list[str] = []

    def fake_engine(model: str, device: str, quantization: str | None, config: Any) -> FakeEngine:
        said_before.append(capsys.readouterr().err)  # what the terminal shows while the model loads
        return FakeEngine("hey")

    read, _ = scripted("/exit")
    monkeypatch.setattr("webbuild.engine.engine.Engine", fake_engine)
    monkeypatch.setattr("builtins.input", read)
    assert main(["chat", "some-model", "--device", "cuda"]) == 0
    [before] = said_before
    assert "* loading some-model on the cuda engine" in before and "compiles it" in before
    assert "ready" not in before
    assert "* ready (" in capsys.readouterr().err


# --- the real engine -------------------------------------------------------------------------------------


@pytest.mark.toolchain
def test_chat_with_the_tiny_engine():
    from tiny_llama import tiny_llama_model

    from webbuild.build.prepare import prepare_model
    from webbuild.engine.engine import Engine

    engine = Engine(prepare_model(tiny_llama_model().source(), "q0f32"))

    class CtrlCOnFirstReply(io.StringIO):
        """Raises KeyboardInterrupt on the first reply text, as a Ctrl-C during streaming would."""

        armed = True

        def write(self, text: str) -> int:
            if self.armed and session.messages and session.messages[-1]["role"] == "user" and text:
                self.armed = False
                raise KeyboardInterrupt
            return super().write(text)

    read, _ = scripted("/set temperature=0;max_tokens=4", "hello", "/stats", "and again", "/stats", "/exit")
    out = CtrlCOnFirstReply()
    session = ChatSession(engine, read, out)
    session.run()
    text = out.getvalue()
    assert "[stopped]" in text and "stopped before it finished" in text
    assert engine.metrics()["running"] == 0  # the interrupted request freed its sequence
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.last_usage is not None and 1 <= session.last_usage["completion_tokens"] <= 4
    assert "prefill:" in text and "decode:" in text
