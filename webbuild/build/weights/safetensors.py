"""A Hugging Face model directory -> config, tokenizer files and float32 numpy tensors.

Reads ``config.json``, ``tokenizer.json``, ``tokenizer_config.json``, ``generation_config.json`` when there
is one, and the weights: one ``model.safetensors`` or the shards that ``model.safetensors.index.json`` lists.
bf16/f16/f32 become float32 (``safetensors`` reads bf16 into numpy through ml_dtypes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from webbuild import _log
from webbuild.build.arch import get_architecture
from webbuild.errors import CorruptFileError, InputError, UnsupportedError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
GENERATION_CONFIG = "generation_config.json"
# float8 checkpoints need their scale tensors, so only plain floats are widened here.
_FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")
_TIP = "the file may be truncated or damaged; download it again"


@dataclass
class HFModel:
    path: Path
    config: dict[str, Any]
    tokenizer_json: str
    tokenizer_config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    generation_config: dict[str, Any]  # {} when the directory has none


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files holding the model: the index's shards, else model.safetensors, else *.safetensors."""
    index = directory / INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CorruptFileError(f"{index} has no weight_map")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{directory}: shards listed in {INDEX} are missing: {', '.join(missing)}")
        return files
    if (directory / SINGLE).is_file():
        return [directory / SINGLE]
    return sorted(directory.glob("*.safetensors"))


def load_hf_dir(directory: Path) -> HFModel:
    """Read a Hugging Face model directory; InputError naming every missing file at once."""
    directory = Path(directory)
    needed = ["config.json", "tokenizer.json", "tokenizer_config.json"]
    missing = [name for name in needed if not (directory / name).is_file()]
    files = weight_files(directory)
    if not files:
        missing.append("*.safetensors (model.safetensors or shards with model.safetensors.index.json)")
    if missing:
        raise InputError(
            f"{directory} is not a complete Hugging Face model directory; missing: {', '.join(missing)}",
            tip="a model directory needs config.json, tokenizer.json, tokenizer_config.json and safetensors weights",
        )
    config = _read_json(directory / "config.json")
    get_architecture(str(config.get("model_type")), str(directory / "config.json"))
    tokenizer_json = (directory / "tokenizer.json").read_text(encoding="utf-8")
    tokenizer_config = _read_json(directory / "tokenizer_config.json")
    generation_config = _read_generation_config(directory / GENERATION_CONFIG)
    tensors = read_safetensors(files)
    # Tied checkpoints sometimes carry a copy of the embedding as lm_head; untied ones always carry their own.
    if "lm_head.weight" not in tensors:
        config["tie_word_embeddings"] = True
    elif config.get("tie_word_embeddings", False):
        del tensors["lm_head.weight"]
    return HFModel(directory, config, tokenizer_json, tokenizer_config, tensors, generation_config)


def _read_generation_config(path: Path) -> dict[str, Any]:
    """``generation_config.json``, optional ({} without it): its ``eos_token_id`` (an id or a list of ids) is
    where many instruct checkpoints list the tokens that end a reply (Phi-3's ``<|end|>``), so a value that is
    no id is refused rather than dropped."""
    if not path.is_file():
        return {}
    config = _read_json(path)
    eos = config.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise CorruptFileError(f"{path}: eos_token_id must be a token id or a list of token ids, not {eos!r}")
    return config


def read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    """Every tensor of the given files as float32, under a progress bar over tensors."""
    tensors: dict[str, np.ndarray] = {}
    handles = []
    try:
        for f in files:
            handles.append((f, _open(f)))
        total = sum(len(h.keys()) for _, h in handles)
        with _log.bar(total, "reading tensors", unit="tensor") as bar:
            for f, handle in handles:
                for name in handle.keys():
                    tensors[name] = _to_float32(f, name, handle)
                    bar.update()
    finally:
        for _, handle in handles:
            handle.__exit__(None, None, None)
    return tensors


def _open(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="numpy").__enter__()
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise CorruptFileError(f"{path} is not a readable safetensors file ({e})", tip=_TIP) from e


def _to_float32(path: Path, name: str, handle: Any) -> np.ndarray:
    try:
        array = handle.get_tensor(name)
    except Exception as e:  # truncated data surfaces here, as various error types
        raise CorruptFileError(f"{path}: tensor {name} cannot be read ({e})", tip=_TIP) from e
    if array.dtype.name not in _FLOAT_DTYPES:
        raise UnsupportedError(
            f"{path}: tensor {name} has dtype {array.dtype}; only bf16/f16/f32 checkpoints are supported",
            tip="use an unquantized checkpoint",
        )
    return array.astype(np.float32)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} does not hold a JSON object")
    return data
