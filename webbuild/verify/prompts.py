"""The prompts ``webbuild verify`` runs: a built-in varied set, or the user's file.

The built-in set covers what tends to break numerics differently: chat-formatted prose, raw code, numbers,
structured text, non-English scripts (multi-byte tokens), and one long prompt that fills most of a prefill
chunk, so attention over long contexts and the chunked scoring path are exercised too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webbuild.errors import InputError

FILE_FORMATS_TIP = (
    "Give a text file with one prompt per line (blank lines and lines starting with # are skipped), a JSON "
    'list, or JSON lines; a JSON entry is a string or {"name": ..., "text": ..., "chat": true|false}.'
)


@dataclass(frozen=True)
class VerifyPrompt:
    """One prompt. ``chat`` wraps it as a user message in the model's chat template (when it has one);
    otherwise the text is scored as is. ``fill`` stretches it to fill a prefill chunk (see ``fill_length``)."""

    name: str
    text: str
    chat: bool = True
    fill: bool = False


_LONG_TEXT = """\
Lighthouses were built where the sea is most dangerous: on reefs that lie just below the surface, on \
headlands that storms drive ships against, and at the mouths of harbours whose channels shift with every \
tide. The earliest were simply fires kept burning on hills, tended by whoever lived nearby and paid, if at \
all, by the merchants whose cargo they protected. Over the centuries the fires moved into towers, the towers \
grew taller, and the wood and coal gave way to oil lamps, then to paraffin, and finally to electric light.

The greatest change, however, was not the fuel but the lens. A bare flame scatters its light in every \
direction, and most of it is wasted on the sky and the ground. In the early nineteenth century, engineers \
learned to surround the lamp with rings of glass prisms that bent the stray light into a single horizontal \
beam. A lamp no brighter than a few candles could now be seen more than twenty miles away. Because the \
whole assembly could be turned by clockwork, each lighthouse was also given its own rhythm of flashes, so \
that a sailor who counted them could tell which coast he was looking at, even on the darkest night.

The keepers who lived in these towers led unusual lives. On a rock far from land, three men might share a \
room the size of a kitchen for weeks at a time, waiting for a relief boat that could only come in calm \
weather. Their days were governed by the lamp: trimming wicks, polishing brass and glass, winding the \
clockwork every few hours, and writing in the log the state of the wind, the sea and the visibility. In \
fog they sounded horns or fired guns at fixed intervals. Many kept gardens in boxes of soil carried out \
from the mainland, and some became skilled naturalists, recording the birds that struck the lantern during \
their autumn migrations.

Today almost every lighthouse is automatic. Sensors switch the light on at dusk, a small computer reports \
faults by radio, and satellite navigation tells a ship its position to within a few metres. Yet the towers \
are still maintained, because electronics can fail and a light on a headland needs no receiver to be \
understood. Several have become museums or guest houses, and their logbooks, kept without a break for more \
than a century, are now read by scientists who study how storms and sea levels have changed over time.

Building a tower on a wave-swept rock was one of the hardest tasks an engineer could take on. Work was \
possible only at low water and in summer, so a season might yield a few dozen hours of real progress. The \
stones were cut on shore to interlocking shapes, numbered, and shipped out one by one, so that each course \
locked into the one below it like the pieces of a puzzle. The lowest courses were solid, and the tower was \
made heavy and broad at its base, curving inward as it rose, because a wave loses its force when it has to \
climb a curved wall instead of striking a flat one.
"""

BUILTIN_PROMPTS: tuple[VerifyPrompt, ...] = (
    VerifyPrompt("prose", "Explain in a few sentences why the sky is blue during the day and red at sunset."),
    VerifyPrompt("code", 'def merge_sorted(a, b):\n    """Merge two sorted lists into one."""\n', chat=False),
    VerifyPrompt("numbers", "What is 17 multiplied by 24? Show each step, then give the answer."),
    VerifyPrompt("json", '{"name": "Ada Lovelace", "born": 1815, "known_for": ["the Analytical Engine", ', chat=False),
    VerifyPrompt("french", "Décris en trois phrases une promenade en forêt au début de l'automne."),
    VerifyPrompt("chinese", "请用两句话介绍一下长城的历史。"),
    VerifyPrompt("russian", "Назови три крупнейших города России и одной фразой опиши каждый."),
    VerifyPrompt("long", _LONG_TEXT, chat=False, fill=True),
)


def fill_length(prefill_chunk_size: int, context_window_size: int, tokens: int) -> int:
    """Prompt length of a ``fill`` prompt: its continuation crosses the end of the first prefill chunk, so
    both the longest single pass and the step into a second chunk are checked."""
    return max(1, min(prefill_chunk_size - tokens // 2, context_window_size - tokens))


def load_prompts(path: Path) -> list[VerifyPrompt]:
    """Reads a prompts file: JSON (a list), JSON lines (``.jsonl``), or plain text (one prompt per line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the prompts file {path}: {exc.strerror}", tip=FILE_FORMATS_TIP) from None
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".json":
            entries = json.loads(text)
            if not isinstance(entries, list):
                raise InputError(f"{path}: expected a JSON list of prompts", tip=FILE_FORMATS_TIP)
        elif suffix == ".jsonl":
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            entries = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}", tip=FILE_FORMATS_TIP) from None
    prompts = [_entry(path, i, entry) for i, entry in enumerate(entries)]
    if not prompts:
        raise InputError(f"{path} holds no prompts", tip=FILE_FORMATS_TIP)
    names = [p.name for p in prompts]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: prompt names must be unique", tip=FILE_FORMATS_TIP)
    return prompts


def _entry(path: Path, index: int, entry: Any) -> VerifyPrompt:
    default_name = f"prompt-{index + 1}"
    if isinstance(entry, str):
        return VerifyPrompt(default_name, entry)
    if isinstance(entry, dict) and isinstance(entry.get("text"), str) and entry["text"]:
        unknown = set(entry) - {"name", "text", "chat", "fill"}
        if unknown:
            raise InputError(f"{path}: prompt {index + 1} has unknown fields {sorted(unknown)}", tip=FILE_FORMATS_TIP)
        return VerifyPrompt(
            str(entry.get("name") or default_name),
            entry["text"],
            chat=bool(entry.get("chat", True)),
            fill=bool(entry.get("fill", False)),
        )
    raise InputError(f"{path}: prompt {index + 1} is neither text nor an object with a text", tip=FILE_FORMATS_TIP)
