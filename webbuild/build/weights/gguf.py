"""GGUF -> HF-layout tensors and an HF-style config, using the PyPI ``gguf`` reader.

Three things differ from a Hugging Face checkpoint: tensor names (``blk.N.attn_q`` vs
``model.layers.N.self_attn.q_proj``), quantized storage (kept as the file's blocks in a ``QuantizedTensor``, which
reads as its exact float32 values and lets the quantize step re-pack them without rounding again), and what
llama.cpp's converter changed in some families' tensors (Llama's Q/K row order, Gemma's norm offset), and RoPE
scaling kept as frequency-factor tensors (Llama 3, Phi-3 128k), which become config again. The family's
``GGUFLayout`` (webbuild/build/arch/) names the tensors and undoes those changes, so every reader yields the same
model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from webbuild import _log
from webbuild.build.arch import gguf_architecture
from webbuild.build.arch.weights import GGUFKeys
from webbuild.build.quantize import QuantizedTensor
from webbuild.errors import CorruptFileError, InputError, UnsupportedError

_TIP = "the file may be truncated or damaged; download it again"


@dataclass
class GGUFModel:
    """What one GGUF file holds, in HF terms. ``metadata`` keeps every key (tokenizer ones included)."""

    path: Path
    architecture: str
    metadata: dict[str, Any]
    config: dict[str, Any]
    tensors: dict[str, np.ndarray | QuantizedTensor]


def open_gguf(path: Path) -> gguf.GGUFReader:
    """A GGUFReader over ``path``; CorruptFileError naming the file when it is not a readable GGUF."""
    try:
        return gguf.GGUFReader(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from e
    except Exception as e:  # the reader parses untrusted bytes; any failure means a bad file
        raise CorruptFileError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})", tip=_TIP) from e


def read_metadata(reader: gguf.GGUFReader, path: Path) -> dict[str, Any]:
    """Every key/value pair as plain Python values (strings, numbers, lists)."""
    try:
        return {key: field.contents() for key, field in reader.fields.items()}
    except Exception as e:  # same reason as open_gguf
        raise CorruptFileError(f"{path}: unreadable GGUF metadata ({e})", tip=_TIP) from e


def load_gguf(path: Path) -> GGUFModel:
    """Read and rename every tensor of a GGUF file; build its HF config."""
    path = Path(path)
    reader = open_gguf(path)
    meta = read_metadata(reader, path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CorruptFileError(f"{path} has no general.architecture metadata", tip=_TIP)
    layout = gguf_architecture(arch, str(path)).gguf
    # RoPE frequency factors are config stored as tensors: their float32 values, whatever the file's type.
    rope_factors = {t.name: np.asarray(_read_tensor(t, path)) for t in reader.tensors if t.name in layout.rope_factors}
    weights = [t for t in reader.tensors if t.name not in rope_factors]
    names = {t.name: layout.hf_name(t.name) for t in weights}
    unknown = sorted(n for n, hf in names.items() if hf is None)
    if unknown:
        raise UnsupportedError(
            f"{path}: tensors with no Hugging Face {arch} counterpart: {', '.join(unknown[:8])}"
            + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""),
            tip="this GGUF uses features webbuild does not model yet",
        )
    config = layout.config(GGUFKeys(meta, str(path), rope_factors), list(names))
    kinds = Counter(t.tensor_type.name for t in weights)
    _log.detail(f"{len(names)} tensors: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))
    tensors: dict[str, np.ndarray | QuantizedTensor] = {}
    with _log.bar(len(weights), "reading", unit="tensor") as bar:
        for t in weights:
            name = str(names[t.name])
            tensors[name] = layout.to_hf(name, _read_tensor(t, path), config)
            bar.update()
    return GGUFModel(path=path, architecture=arch, metadata=meta, config=config, tensors=tensors)


def _read_tensor(t: Any, path: Path) -> np.ndarray | QuantizedTensor:
    """A float tensor as float32; a quantized one as its blocks, copied out of the memory map, unrounded."""
    # GGUF lists dimensions innermost first; numpy/HF list them outermost first.
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    try:
        if gguf.GGML_QUANT_SIZES[t.tensor_type][0] > 1:  # elements per block: 1 for plain float/int types
            blocks = np.array(t.data, dtype=np.uint8).reshape(*shape[:-1], -1)
            gguf.quants.dequantize(blocks[(0,) * (blocks.ndim - 1)], t.tensor_type)  # one row: can it be read?
            return QuantizedTensor(t.tensor_type.name, blocks, shape[-1])
        array = gguf.quants.dequantize(t.data, t.tensor_type)
        out = np.asarray(array, dtype=np.float32).reshape(shape)
    except NotImplementedError as e:
        raise UnsupportedError(
            f"{path}: tensor {t.name} has type {t.tensor_type.name}, which cannot be dequantized"
        ) from e
    except (ValueError, TypeError) as e:
        raise CorruptFileError(f"{path}: tensor {t.name} is damaged ({e})", tip=_TIP) from e
    # F32 tensors come back as views of the memory map; copy so the result outlives the reader.
    return out.copy() if np.may_share_memory(out, t.data) else out
