"""Small SentencePiece BPE models with byte fallback, trained in-test with the ``sentencepiece`` package (the
tokenizer Llama 2, Mistral, Phi-3 and Gemma were trained with), and their vocabulary written into a GGUF as
llama.cpp's converter writes it (written here independently of webbuild, so tests check webbuild against it).

Two styles: Llama 2's (SentencePiece's dummy prefix: a space before the text; runs of spaces learned as pieces)
and Gemma's (no prefix; runs of spaces as user-defined pieces, which llama.cpp stores spelled with spaces).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import gguf
import hf_tiny
import sentencepiece as spm
from tiny_llama import TinyLlama, tiny_llama_model

# What the models learn from: prose in several scripts, code, numbers. Characters not in it (Korean, emoji,
# Arabic ...) reach the model only as byte-fallback tokens.
CORPUS = [
    "The quick brown fox jumps over the lazy dog, then the dog sleeps in the sun.",
    "The weather is fine today; there is no rain in the forecast for the weekend.",
    "In 2024 the price rose 12.5% to 1,234.56 euros, and in 2025 it fell by 3%.",
    "def square(x):\n    return x ** 2  # the square of x\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i, square(i))\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "function add(a, b) {\n  return a + b;\n}\nconsole.log(add(1, 2));\n",
    "Café crème, naïve façade, déjà vu: the French words stay in English texts.",
    "Über die Brücke gehen die Mädchen und Jungen zur Schule.",
    "Привет, как дела? Хорошо, спасибо. Сегодня хорошая погода.",
    "你好，世界！今天天气很好。我们去公园散步吧。",
    "こんにちは、世界。今日はいい天気ですね。",
    "<think>the user wants a short answer</think> The answer is 42.",
    "Tabs\tand  double  spaces   and\n\nblank lines\n\n\nappear in text too.",
]
USER_DEFINED = ["<think>", "</think>"]  # matched whole in the text, decoded as text
CONTROL = ["<start_of_turn>", "<end_of_turn>"]  # special: matched whole, skipped when decoding
GEMMA_SPACES = ["▁" * n for n in range(2, 9)]  # Gemma keeps runs of 2-31 spaces as user-defined pieces
UNK, BOS, EOS = 0, 1, 2
CHAT_TEMPLATE = hf_tiny.TEMPLATES["gemma"]  # {{ bos_token }}, then <start_of_turn>role ... <end_of_turn> turns

# Text the tokenizers must agree on: the family tests' prompts (code, numbers, several scripts), more scripts
# (some absent from the corpus: byte fallback) and whitespace in every position.
PROMPTS = [
    *hf_tiny.PROMPTS,
    "The quick brown fox",
    "class Point:\n\tdef __init__(self):\n\t\tpass\n",
    "if (a < b) { return a + b; } // C-like",
    "3.14159, -42, 1e-9, 0x1F, 1,000,000",
    "Über die Brücke: Mädchen, Jungen, Schule.",
    "한국어 텍스트, العربية, हिन्दी, Ελληνικά",
    "emoji: 🤖👩‍👩‍👧 🇫🇷",
    " one leading space",
    "   three leading spaces",
    "\tleading tab",
    "\n\nleading newlines",
    "trailing spaces   ",
    "a  b   c    d     e",
    "x" + " " * 40 + "y",
    "line one\nline two\r\nline three\n\n\n",
    "    indented = 4\n        deeper = 8\n",
    "\u00a0no-break space and\u2003em space",
    " ",
    "  ",
    "",
]


@dataclass(frozen=True)
class Style:
    """How a family sets SentencePiece up."""

    name: str
    space_prefix: bool  # SentencePiece's add_dummy_prefix, GGUF's tokenizer.ggml.add_space_prefix
    user_defined: tuple[str, ...]


LLAMA2 = Style("llama2", space_prefix=True, user_defined=tuple(USER_DEFINED))
GEMMA = Style("gemma", space_prefix=False, user_defined=tuple(USER_DEFINED + GEMMA_SPACES))


@functools.cache
def train(style: Style, vocab_size: int = 700) -> spm.SentencePieceProcessor:
    """A BPE model with byte fallback and no text normalization (as Llama 2 and Gemma have), in ~20 ms."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=style.space_prefix,
        allow_whitespace_only_pieces=style.space_prefix,
        split_digits=True,
        user_defined_symbols=list(style.user_defined),
        control_symbols=CONTROL,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=-1,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def vocabulary(style: Style) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and GGUF token types as llama.cpp's ``_create_vocab_sentencepiece`` makes them: types from
    the processor, and the added tokens (user-defined and control) scored -1000, a user-defined one's "▁"
    spelled as a space (llama.cpp matches those in the raw text)."""
    sp = train(style)
    tokens, scores, types = [], [], []
    T = gguf.TokenType
    for i in range(sp.vocab_size()):
        piece, score = sp.id_to_piece(i), sp.get_score(i)
        if piece in style.user_defined:
            kind, piece, score = T.USER_DEFINED, piece.replace("▁", " "), -1000.0
        elif piece in CONTROL:
            kind, score = T.CONTROL, -1000.0
        elif sp.is_unknown(i):
            kind = T.UNKNOWN
        elif sp.is_control(i):
            kind = T.CONTROL
        elif sp.is_byte(i):
            kind = T.BYTE
        elif sp.is_unused(i):
            kind = T.UNUSED
        else:
            kind = T.NORMAL
        tokens.append(piece)
        scores.append(score)
        types.append(int(kind))
    return tokens, scores, types


def add_tokenizer(writer: gguf.GGUFWriter, style: Style, chat_template: str | None = None) -> None:
    """The tokenizer keys llama.cpp's converter writes for a SentencePiece model."""
    tokens, scores, types = vocabulary(style)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(style.space_prefix)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_unk_token_id(UNK)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def write_tokenizer_gguf(path: Path, style: Style, arch: str = "llama") -> Path:
    """A GGUF holding only the tokenizer (no tensors): enough for the tokenizer's readers."""
    writer = gguf.GGUFWriter(path, arch)
    add_tokenizer(writer, style)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_model(style: Style) -> TinyLlama:
    """The tiny random Llama of tests/tiny_llama.py with this style's vocabulary (write it with
    ``write_gguf(path, model, tokenizer=lambda w: add_tokenizer(w, style, CHAT_TEMPLATE))``)."""
    tokens, _, types = vocabulary(style)
    return tiny_llama_model(vocabulary=(tokens, types))
