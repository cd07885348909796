"""Writes and reads the browser weight format: ``tensor-cache.json`` + ``params_shard_N.bin`` (ARTIFACTS.md).

Our own small writer rather than ``tvm.contrib.tvmjs.dump_tensor_cache``: that one prints to stdout,
re-reads every shard to hash it, and keeps big tensors out of order. This one streams each tensor's bytes
to its shard once, hashing (md5 for the cache json, sha256 for the manifest) on the way.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from webbuild import _log
from webbuild.errors import CorruptFileError, InputError
from webbuild.site_format.manifest import TENSOR_CACHE_JSON as CACHE_JSON

SHARD_PREFIX = "params_shard_"
SHARD_HASH_DIGITS = 16
SHARD_CAP = 32 * 1024 * 1024


@dataclass(frozen=True)
class WrittenFile:
    """One output file, relative to the cache directory, with what a manifest needs."""

    path: str
    bytes: int
    sha256: str


@dataclass
class TensorCacheSummary:
    """What ``write_tensor_cache`` wrote: files (shards first, json last) and size statistics."""

    directory: Path
    files: list[WrittenFile] = field(default_factory=list)
    tensor_count: int = 0
    param_count: int = 0  # parameters of the unquantized model (a q_weight word counts as 8)
    param_bytes: int = 0

    @property
    def bits_per_param(self) -> float:
        return self.param_bytes * 8.0 / self.param_count if self.param_count else 0.0

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def _dtype_name(dtype: np.dtype) -> str:
    # numpy and ml_dtypes names ("float16", "uint32", "bfloat16") are also TVM's dtype strings.
    return "bool" if dtype == np.bool_ else str(dtype)


def _logical_params(name: str, arr: np.ndarray) -> int:
    """Source parameters a stored tensor stands for: packed int4 words hold 8, scales add none."""
    if name.endswith(".q_weight") and arr.dtype == np.uint32:
        return arr.size * 8
    if name.endswith(".q_scale"):
        return 0
    return int(arr.size)


def _plan_shards(sizes: list[int], cap: int) -> list[list[int]]:
    """Groups tensor indices into shards, in order: fill to ``cap``; a tensor >= cap/2 stands alone."""
    shards: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i, nbytes in enumerate(sizes):
        if 2 * nbytes >= cap:
            if current:
                shards.append(current)
                current, filled = [], 0
            shards.append([i])
            continue
        if current and filled + nbytes > cap:
            shards.append(current)
            current, filled = [], 0
        current.append(i)
        filled += nbytes
    if current:
        shards.append(current)
    return shards


def write_tensor_cache(
    tensors: dict[str, np.ndarray],
    out_dir: str | Path,
    *,
    shard_cap: int = SHARD_CAP,
    param_count: int | None = None,
) -> TensorCacheSummary:
    """Writes ``tensors`` (in order, raw little-endian bytes) as a tensor cache in ``out_dir``.

    ``param_count`` is the source model's parameter count for ``BitsPerParam``; by default it is
    inferred from the names (``*.q_weight`` words count 8, ``*.q_scale`` 0). Shards left over from
    an earlier write to the same directory are removed so the directory matches the json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    arrays = []
    for name in names:
        arr = np.asarray(tensors[name])
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arrays.append(np.ascontiguousarray(arr))
    sizes = [a.nbytes for a in arrays]
    summary = TensorCacheSummary(directory=out, tensor_count=len(names), param_bytes=sum(sizes))
    summary.param_count = (
        param_count
        if param_count is not None
        else sum(_logical_params(n, a) for n, a in zip(names, arrays, strict=True))
    )

    shard_records = []
    plan = _plan_shards(sizes, shard_cap)
    with _log.bar(sum(sizes), "write weights", unit="B", unit_scale=True) as bar:
        for shard_idx, members in enumerate(plan):
            writing = f"{SHARD_PREFIX}{shard_idx}.partial"
            md5, sha = hashlib.md5(), hashlib.sha256()
            records, offset = [], 0
            with open(out / writing, "wb") as f:
                for i in members:
                    arr = arrays[i]
                    # Viewed as bytes: the buffer protocol rejects some dtypes (ml_dtypes' bfloat16).
                    buf = memoryview(arr.reshape(-1).view(np.uint8))
                    f.write(buf)
                    md5.update(buf)
                    sha.update(buf)
                    records.append(
                        {
                            "name": names[i],
                            "shape": [int(d) for d in arr.shape],
                            "dtype": _dtype_name(arr.dtype),
                            "format": "raw",
                            "nbytes": sizes[i],
                            "byteOffset": offset,
                        }
                    )
                    offset += sizes[i]
                    bar.update(sizes[i])
            # The name carries the content hash, so a CDN or browser may cache a shard forever: new weights
            # get new URLs (tvmjs fetches whatever dataPath names).
            data_path = f"{SHARD_PREFIX}{shard_idx}.{sha.hexdigest()[:SHARD_HASH_DIGITS]}.bin"
            (out / writing).replace(out / data_path)
            shard_records.append(
                {
                    "dataPath": data_path,
                    "format": "raw-shard",
                    "nbytes": offset,
                    "records": records,
                    "md5sum": md5.hexdigest(),
                }
            )
            summary.files.append(WrittenFile(data_path, offset, sha.hexdigest()))

    for stale in out.glob(f"{SHARD_PREFIX}*.bin"):
        if stale.name not in {f.path for f in summary.files}:
            stale.unlink()

    doc = {
        "metadata": {
            "ParamSize": len(names),
            "ParamBytes": summary.param_bytes,
            "BitsPerParam": summary.bits_per_param,
        },
        "records": shard_records,
    }
    # No indentation: every visitor fetches it, and SmolLM2's 423 records take 112 KB indented, 59 KB without.
    text = json.dumps(doc, separators=(",", ":")).encode()
    (out / CACHE_JSON).write_bytes(text)
    summary.files.append(WrittenFile(CACHE_JSON, len(text), hashlib.sha256(text).hexdigest()))
    return summary


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name).newbyteorder("<")


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


def _read_index(root: Path) -> tuple[Path, list[dict]]:
    json_path = root / CACHE_JSON
    if not json_path.is_file():
        raise InputError(f"No {CACHE_JSON} in {root}.", tip="Point at a model directory written by `webbuild package`.")
    try:
        shards = json.loads(json_path.read_text())["records"]
        for shard in shards:
            data_path = Path(shard["dataPath"])
            if data_path.is_absolute() or ".." in data_path.parts:
                raise ValueError(f"a shard outside its directory: {shard['dataPath']!r}")
            shard["nbytes"] = int(shard["nbytes"])
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{json_path} is not a valid tensor cache: {err}") from None
    return json_path, shards


def shard_files(cache_dir: str | Path) -> list[Path]:
    """The shard files a tensor cache lists, each present with the size the json gives (no hashing)."""
    root = Path(cache_dir)
    json_path, shards = _read_index(root)
    paths = []
    for shard in shards:
        path = root / shard["dataPath"]
        if not path.is_file():
            raise CorruptFileError(f"Shard {path} listed in {json_path} is missing.")
        if path.stat().st_size != shard["nbytes"]:
            raise CorruptFileError(
                f"Shard {path} has {path.stat().st_size} bytes, {json_path} says {shard['nbytes']}.",
                tip="The weights were written incompletely; re-run `webbuild package`.",
            )
        paths.append(path)
    return paths


def read_tensor_cache(cache_dir: str | Path, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Reads a tensor cache (ours or MLC's) back into ``{name: array}``, in record order.

    With ``verify``, each shard's md5 is checked against the json (sizes always are). ``f32-to-bf16``
    records are widened to float32, as the browser runtime does.
    """
    root = Path(cache_dir)
    json_path, shards = _read_index(root)
    result: dict[str, np.ndarray] = {}
    for shard, path in zip(shards, shard_files(root), strict=True):
        data = np.fromfile(path, dtype=np.uint8)
        if verify and shard.get("md5sum") and hashlib.md5(data).hexdigest() != shard["md5sum"]:
            raise CorruptFileError(
                f"Shard {path} fails its md5 check.",
                tip="Re-run `webbuild package` to rewrite the weights.",
            )
        for rec in shard["records"]:
            start, nbytes = int(rec["byteOffset"]), int(rec["nbytes"])
            if start + nbytes > data.size:
                raise CorruptFileError(f"Record {rec['name']!r} runs past the end of {path}.")
            raw = data[start : start + nbytes]
            shape = tuple(int(d) for d in rec["shape"])
            if rec.get("format", "raw") == "f32-to-bf16" and rec["dtype"] == "float32":
                arr = _bf16_to_f32(raw.copy())
            else:
                dtype = _np_dtype(rec["dtype"])
                if nbytes != math.prod(shape) * dtype.itemsize:
                    raise CorruptFileError(f"Record {rec['name']!r} in {json_path}: nbytes does not match shape.")
                arr = raw.view(dtype)
                if not arr.flags.aligned:
                    arr = arr.copy()
            result[rec["name"]] = arr.reshape(shape)
    return result
