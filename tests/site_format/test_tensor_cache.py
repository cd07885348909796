"""tensor-cache.json + params_shard_N.bin: the exact layout tvmjs reads, shard splitting, integrity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from webbuild.errors import CorruptFileError, InputError
from webbuild.site_format.tensor_cache import read_tensor_cache, write_tensor_cache

KIB = 1024


def _mixed() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.q_weight": rng.integers(0, 2**32, size=(16, 8), dtype=np.uint32),
        "a.q_scale": rng.standard_normal((16, 2)).astype(np.float16),
        "norm.weight": rng.standard_normal(7).astype(np.float16),  # 14 bytes: later offsets not 4-aligned
        "b.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "ids": np.arange(5, dtype=np.int32),
    }


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    src = _mixed()
    write_tensor_cache(src, tmp_path)
    back = read_tensor_cache(tmp_path)
    assert list(back) == list(src)
    for name, arr in src.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        assert back[name].tobytes() == arr.tobytes()


def test_json_layout(tmp_path: Path) -> None:
    src = _mixed()
    summary = write_tensor_cache(src, tmp_path)
    text = (tmp_path / "tensor-cache.json").read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, separators=(",", ":"))  # no whitespace: every visitor fetches it
    assert set(doc) == {"metadata", "records"}
    total = sum(a.nbytes for a in src.values())
    params = 16 * 8 * 8 + 7 + 15 + 5  # q_weight words count 8 params each, q_scale none
    assert doc["metadata"] == {"ParamSize": 5, "ParamBytes": total, "BitsPerParam": total * 8 / params}
    assert summary.param_count == params and summary.param_bytes == total and summary.tensor_count == 5
    (shard,) = doc["records"]
    assert set(shard) == {"dataPath", "format", "nbytes", "md5sum", "records"}
    content = b"".join(a.tobytes() for a in src.values())
    assert shard["dataPath"] == f"params_shard_0.{hashlib.sha256(content).hexdigest()[:16]}.bin"
    assert shard["format"] == "raw-shard"
    assert shard["nbytes"] == total
    offset = 0
    for rec, (name, arr) in zip(shard["records"], src.items(), strict=True):
        assert rec == {
            "name": name,
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "format": "raw",
            "nbytes": arr.nbytes,
            "byteOffset": offset,
        }
        offset += arr.nbytes
    assert (tmp_path / shard["dataPath"]).read_bytes() == content


def test_md5_and_summary_hashes_match_files(tmp_path: Path) -> None:
    summary = write_tensor_cache(_mixed(), tmp_path, shard_cap=1 * KIB)
    doc = json.loads((tmp_path / "tensor-cache.json").read_text())
    for shard in doc["records"]:
        data = (tmp_path / shard["dataPath"]).read_bytes()
        assert hashlib.md5(data).hexdigest() == shard["md5sum"]
        assert len(data) == shard["nbytes"]
    assert [f.path for f in summary.files][-1] == "tensor-cache.json"
    for f in summary.files:
        data = (tmp_path / f.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f.bytes, f.sha256)


def test_shard_split_rule(tmp_path: Path) -> None:
    cap = 1 * KIB
    src = {
        "s0": np.zeros(100, np.float32),  # 400 B
        "s1": np.ones(100, np.float32),  # 400 B: 800 B so far
        "s2": np.full(100, 2, np.float32),  # 400 B: would exceed 1 KiB -> new shard
        "big": np.full(128, 3, np.float32),  # 512 B = half the cap -> its own shard
        "s3": np.full(10, 4, np.float32),
        "huge": np.full(1000, 5, np.float32),  # 4000 B > cap: its own (oversized) shard
    }
    write_tensor_cache(src, tmp_path, shard_cap=cap)
    doc = json.loads((tmp_path / "tensor-cache.json").read_text())
    layout = [[r["name"] for r in shard["records"]] for shard in doc["records"]]
    assert layout == [["s0", "s1"], ["s2"], ["big"], ["s3"], ["huge"]]
    assert [s["dataPath"].split(".")[0] for s in doc["records"]] == [f"params_shard_{i}" for i in range(5)]
    assert all(s["nbytes"] <= cap for s in doc["records"][:-1])
    assert doc["records"][-1]["nbytes"] == 4000
    back = read_tensor_cache(tmp_path)
    assert all(np.array_equal(back[k], v) for k, v in src.items())


def test_default_cap_is_32_mib(tmp_path: Path) -> None:
    src = {f"t{i}": np.zeros(3 * 1024 * 1024, np.uint8) for i in range(12)}  # 3 MiB each
    write_tensor_cache(src, tmp_path)
    doc = json.loads((tmp_path / "tensor-cache.json").read_text())
    assert [len(s["records"]) for s in doc["records"]] == [10, 2]


def test_rewrite_removes_stale_shards(tmp_path: Path) -> None:
    write_tensor_cache({f"t{i}": np.zeros(300, np.float32) for i in range(4)}, tmp_path, shard_cap=KIB)
    assert len(list(tmp_path.glob("params_shard_*.bin"))) == 4
    write_tensor_cache({"t": np.zeros(3, np.float32)}, tmp_path, shard_cap=KIB)
    assert [p.name.split(".")[0] for p in tmp_path.glob("params_shard_*.bin")] == ["params_shard_0"]


def test_corrupt_shard_fails_md5(tmp_path: Path) -> None:
    write_tensor_cache(_mixed(), tmp_path)
    (shard,) = tmp_path.glob("params_shard_0.*.bin")
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="md5"):
        read_tensor_cache(tmp_path)
    assert read_tensor_cache(tmp_path, verify=False)["a.q_weight"].shape == (16, 8)


def test_truncated_shard_is_reported(tmp_path: Path) -> None:
    write_tensor_cache(_mixed(), tmp_path)
    (shard,) = tmp_path.glob("params_shard_0.*.bin")
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(CorruptFileError, match="bytes"):
        read_tensor_cache(tmp_path)


def test_missing_cache_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read_tensor_cache(tmp_path)


def test_reads_f32_to_bf16_records(tmp_path: Path) -> None:
    # MLC writes float32 as bf16 bytes with format "f32-to-bf16"; the reader widens them like tvmjs does.
    values = np.array([1.0, -2.5, 0.15625], np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    (tmp_path / "params_shard_0.bin").write_bytes(raw)
    rec = {
        "name": "w",
        "shape": [3],
        "dtype": "float32",
        "format": "f32-to-bf16",
        "nbytes": 6,
        "byteOffset": 0,
    }
    shard = {
        "dataPath": "params_shard_0.bin",
        "format": "raw-shard",
        "nbytes": 6,
        "records": [rec],
        "md5sum": hashlib.md5(raw).hexdigest(),
    }
    (tmp_path / "tensor-cache.json").write_text(json.dumps({"metadata": {}, "records": [shard]}))
    np.testing.assert_array_equal(read_tensor_cache(tmp_path)["w"], values)


def test_tvm_reader_agrees(tmp_path: Path) -> None:
    # The reference reader in the TVM wheel (same format as tvmjs's loader) sees the same tensors.
    tvmjs = pytest.importorskip("tvm.contrib.tvmjs")
    import tvm

    src = _mixed()
    write_tensor_cache(src, tmp_path, shard_cap=KIB)
    loaded, metadata = tvmjs.load_tensor_cache(str(tmp_path), tvm.cpu())
    assert metadata["ParamSize"] == len(src)
    assert list(loaded) == list(src)
    for name, arr in src.items():
        assert loaded[name].numpy().tobytes() == arr.tobytes()


def test_shard_names_carry_their_content_hash_so_they_can_be_cached_forever(tmp_path: Path) -> None:
    write_tensor_cache({"t": np.zeros(300, np.float32)}, tmp_path / "a")
    write_tensor_cache({"t": np.ones(300, np.float32)}, tmp_path / "b")
    (a,) = (tmp_path / "a").glob("params_shard_0.*.bin")
    (b,) = (tmp_path / "b").glob("params_shard_0.*.bin")
    assert a.name != b.name
    assert a.name.split(".")[1] == hashlib.sha256(a.read_bytes()).hexdigest()[:16]
