"""webbuild.verify.prompts: the built-in prompt set and the prompt file formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webbuild.errors import InputError
from webbuild.verify.prompts import BUILTIN_PROMPTS, VerifyPrompt, fill_length, load_prompts


def test_the_builtin_set_is_varied() -> None:
    names = [p.name for p in BUILTIN_PROMPTS]
    assert len(set(names)) == len(names)
    assert {"prose", "code", "numbers", "long"} <= set(names)
    assert any(not p.chat for p in BUILTIN_PROMPTS) and any(p.chat for p in BUILTIN_PROMPTS)
    assert any(any(ord(c) > 0x2E80 for c in p.text) for p in BUILTIN_PROMPTS), "a CJK prompt"
    assert any(any(c in "éèàç" for c in p.text) for p in BUILTIN_PROMPTS), "a Latin-accented prompt"
    assert any(any("\u0400" <= c <= "\u04ff" for c in p.text) for p in BUILTIN_PROMPTS), "a Cyrillic prompt"
    assert any(any(c.isdigit() for c in p.text) for p in BUILTIN_PROMPTS), "numbers"
    long = next(p for p in BUILTIN_PROMPTS if p.fill)
    assert len(long.text) > 2000  # ~500 tokens for a 49k-token BPE vocabulary


def test_fill_length_crosses_the_first_prefill_chunk_and_fits_the_context() -> None:
    assert fill_length(512, 2048, 16) == 504  # 504 + 16 tokens end 8 tokens into the second chunk
    assert fill_length(16, 128, 8) == 12
    assert fill_length(512, 300, 16) == 284  # the context window binds first


def test_text_files_hold_one_prompt_per_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\nHello there\n\n  Bonjour  \n", encoding="utf-8")
    assert load_prompts(path) == [VerifyPrompt("prompt-1", "Hello there"), VerifyPrompt("prompt-2", "  Bonjour  ")]


def test_json_and_json_lines_take_strings_and_objects(tmp_path: Path) -> None:
    entries = ["plain", {"name": "code", "text": "def f():\n", "chat": False}]
    (tmp_path / "p.json").write_text(json.dumps(entries))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    want = [VerifyPrompt("prompt-1", "plain"), VerifyPrompt("code", "def f():\n", chat=False)]
    assert load_prompts(tmp_path / "p.json") == want
    assert load_prompts(tmp_path / "p.jsonl") == want


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("obj.json", '{"text": "x"}', "JSON list"),
        ("empty.txt", "# only a comment\n", "no prompts"),
        ("typo.json", '[{"txt": "x"}]', "neither text"),
        ("extra.json", '[{"text": "x", "temperature": 0}]', "unknown fields"),
        ("dupes.json", '[{"name": "a", "text": "x"}, {"name": "a", "text": "y"}]', "unique"),
    ],
)
def test_bad_files_are_refused_with_the_formats_in_the_tip(tmp_path: Path, name: str, content: str, message: str):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        load_prompts(path)
    assert err.value.tip is not None and "one prompt per line" in err.value.tip


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_prompts(tmp_path / "nope.txt")
