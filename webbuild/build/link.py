"""Links a TVM-compiled WebGPU executable into a browser model library (.wasm) with emscripten.

Every model library carries TVM's wasm runtime (VM, paged KV cache, tvmjs glue). Its three sources ship in
the apache-tvm wheel but need nine headers the wheel lacks; ours live in ``webbuild/build/wasm_runtime/`` in the
folder layout the sources include them from, and the staged KV cache source gets webbuild's repair
(``runtime_patch.py``). The runtime is compiled once to wasm *objects* and cached,
because compiling it takes minutes, and linking objects is much faster than linking bitcode.

TVM 0.27 emits LLVM-22 bitcode, which Debian emscripten's LLVM-14 linker cannot read, so the fcompile we
hand to ``export_library`` asks TVM for wasm object files instead (``object_format = "o"``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webbuild import _log
from webbuild.build.runtime_patch import apply_patches, patches_key
from webbuild.cache import cache_dir, digest
from webbuild.errors import BuildError, ToolchainError

RUNTIME_SOURCES = ("wasm_runtime.cc", "webgpu_runtime.cc", "tvmjs_support.cc")
RUNTIME_CFLAGS = ("-O3", "-std=c++17", "-Wno-ignored-attributes")
# Include roots inside the staged source tree, in the order TVM's web Makefile uses them.
_INCLUDE_ROOTS = (
    ".",
    "include",
    "3rdparty/tvm-ffi/include",
    "3rdparty/tvm-ffi/3rdparty/dlpack/include",
    "3rdparty/compiler-rt",
)
# -O1: emcc then runs no Binaryen pass (its -O3 one takes a minute and saves ~1 MB of 5, 0.2 MB gzipped);
# we run a quick ``wasm-opt`` after it instead (WASM_OPT_FLAGS).
LINK_FLAGS = (
    "-O1", "-std=c++17", "--no-entry",
    "-s", "WASM_BIGINT=1",
    "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",
    "-s", "STANDALONE_WASM=1",
    "-s", "ALLOW_MEMORY_GROWTH=1",
    "-s", "TOTAL_MEMORY=160MB",
)  # fmt: skip
# What tvmjs's Environment provides; any other import fails at WebAssembly.instantiate (ARTIFACTS.md).
ALLOWED_IMPORTS = frozenset(
    [("env", name) for name in ("TVMFFIWasmSafeCall", "TVMFFIWasmFunctionDeleter", "emscripten_notify_memory_growth")]
    + [
        ("wasi_snapshot_preview1", name)
        for name in (
            "clock_time_get",
            "proc_exit",
            "fd_write",
            "fd_read",
            "fd_close",
            "environ_sizes_get",
            "environ_get",
            "fd_seek",
        )
    ]
)

# -O1, and functions that differ only in constants or callees merged (the kernels' host-side launchers, tvm-ffi's
# typed adapters): 0.22 MiB less of SmolLM2's 5.9 MiB library for half a second more, and a decode step of a tiny
# model in Node (VM, KV cache and calls, no real kernels) as fast as before. -Oz would save 0.14 MiB more for 90 s
# more a link; the runtime objects compiled -Os instead of -O3 (0.5 MiB less) made that step 2.3x slower.
WASM_OPT_FLAGS = ("-O1", "--merge-similar-functions", "--strip-debug", "--strip-producers")

HEADERS_DIR = Path(__file__).parent / "wasm_runtime"
EMCC_TIP = "sudo apt-get install emscripten (or run scripts/setup.sh)"
_BUILD_INFO = "build.json"


# --- emscripten -----------------------------------------------------------------------------------------


def find_emcc() -> str:
    """Path of ``emcc``; ToolchainError with the install command when it is missing."""
    path = shutil.which("emcc")
    if path is None:
        raise ToolchainError("emscripten (emcc) is not installed; it links the WebGPU model library", tip=EMCC_TIP)
    return path


@functools.cache
def _emcc_version_of(emcc: str) -> str:
    try:
        out = subprocess.run([emcc, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(f"{emcc} --version failed: {exc}", tip=EMCC_TIP) from exc
    first = out.splitlines()[0] if out else ""
    # "emcc (Emscripten gcc/clang-like replacement + linker emulating GNU ld) 3.1.6 ()"
    words = [w for w in first.replace("(", " ").replace(")", " ").split() if w[:1].isdigit() and "." in w]
    return words[-1] if words else first.strip()


def emcc_version() -> str:
    """The installed emcc's version, e.g. ``"3.1.6"``."""
    return _emcc_version_of(find_emcc())


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    _log.detail("> " + " ".join(cmd))
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)


def _tail(text: str, lines: int = 40, chars: int = 4000) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept)[-chars:]


# --- the runtime objects ------------------------------------------------------------------------------------


def _tvm_roots() -> tuple[Path, Path, str]:
    """(tvm package dir, tvm_ffi package dir, version string) of the installed wheels."""
    try:
        import tvm
        import tvm_ffi
    except ImportError as exc:  # pragma: no cover - TVM is a hard dependency
        raise ToolchainError(
            f"Apache TVM is not importable: {exc}", tip="pip install apache-tvm==0.27.0.post1"
        ) from exc
    tvm_root, ffi_root = Path(tvm.__file__).parent, Path(tvm_ffi.__file__).parent
    missing = [s for s in RUNTIME_SOURCES if not (tvm_root / "web" / "emcc" / s).is_file()]
    if missing or not (tvm_root / "src" / "runtime").is_dir() or not (ffi_root / "src" / "ffi").is_dir():
        raise ToolchainError(
            f"the installed TVM ({tvm_root}) lacks the web runtime sources ({', '.join(missing) or 'src/'})",
            tip="pip install --force-reinstall apache-tvm==0.27.0.post1",
        )
    return tvm_root, ffi_root, f"tvm {tvm.__version__}, tvm-ffi {tvm_ffi.__version__}"


def _header_files() -> list[Path]:
    return sorted(p for p in HEADERS_DIR.rglob("*.h") if p.is_file())


def runtime_key() -> str:
    """Cache key of the runtime objects: TVM and emcc versions, our headers and source patches, the compile flags."""
    _, _, versions = _tvm_roots()
    headers = [item for p in _header_files() for item in (p.relative_to(HEADERS_DIR).as_posix(), p.read_bytes())]
    flags = " ".join(RUNTIME_CFLAGS)
    return digest("wasm-runtime/1", versions, emcc_version(), flags, *_INCLUDE_ROOTS, *headers, patches_key())


def _object_names() -> list[str]:
    return [Path(s).with_suffix(".o").name for s in RUNTIME_SOURCES]


def cached_runtime() -> Path | None:
    """The folder holding the runtime objects if they are built for this TVM/emcc/headers, else None."""
    try:
        path = cache_dir("wasm-runtime") / runtime_key()
    except ToolchainError:
        return None
    complete = (path / _BUILD_INFO).is_file() and all((path / n).is_file() for n in _object_names())
    return path if complete else None


def _stage_sources(tvm_root: Path, ffi_root: Path, stage: Path) -> None:
    """Lays out TVM's runtime sources as its web Makefile expects (tvm-ffi under 3rdparty/), with our
    headers dropped into the same tree so relative includes like ``../support/bytes_io.h`` resolve, and
    patches the copy (runtime_patch.py)."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(tvm_root / "src", stage / "src", ignore=skip)
    shutil.copytree(tvm_root / "include", stage / "include", ignore=skip)
    shutil.copytree(tvm_root / "web" / "emcc", stage / "web" / "emcc", ignore=skip)
    ffi = stage / "3rdparty" / "tvm-ffi"
    shutil.copytree(ffi_root / "src", ffi / "src", ignore=skip)
    shutil.copytree(ffi_root / "include", ffi / "include", ignore=skip)
    shutil.copytree(ffi_root / "3rdparty" / "dlpack", ffi / "3rdparty" / "dlpack", ignore=skip)
    for header in _header_files():
        dest = stage / header.relative_to(HEADERS_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(header, dest)
    apply_patches(stage)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serializes runtime builds across processes (a second builder waits, then finds the cache)."""
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_runtime(*, force: bool = False) -> list[Path]:
    """Returns the wasm objects of TVM's web runtime, compiling them (~2 min, once) when not cached.

    The cache folder is ``cache_dir("wasm-runtime", runtime_key())``; it appears only when complete
    (built in a temp folder, then renamed).
    """
    emcc = find_emcc()
    tvm_root, ffi_root, versions = _tvm_roots()
    parent = cache_dir("wasm-runtime")
    key = runtime_key()
    final = parent / key
    with _locked(parent / f".{key}.lock"):
        done = cached_runtime()
        if done is not None and not force:
            _log.detail(f"wasm runtime from cache: {done}")
            return [done / n for n in _object_names()]
        work = Path(tempfile.mkdtemp(prefix=f".{key}.build-", dir=parent))
        try:
            _compile_runtime(emcc, tvm_root, ffi_root, work)
            info = {
                "key": key,
                "versions": versions,
                "emcc": emcc_version(),
                "cflags": list(RUNTIME_CFLAGS),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            (work / _BUILD_INFO).write_text(json.dumps(info, indent=1))
            if final.exists():  # a stale or forced-over build: move it aside, drop it after the swap
                old = Path(tempfile.mkdtemp(prefix=f".{key}.old-", dir=parent))
                os.replace(final, old / "x")
                os.replace(work, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return [final / n for n in _object_names()]


def _compile_runtime(emcc: str, tvm_root: Path, ffi_root: Path, work: Path) -> None:
    stage = work / "src-tree"
    _stage_sources(tvm_root, ffi_root, stage)
    includes = [f"-I{root}" for root in _INCLUDE_ROOTS]

    commands = {
        source: [emcc, *RUNTIME_CFLAGS, *includes, "-c", f"web/emcc/{source}", "-o", str(work / obj)]
        for source, obj in zip(RUNTIME_SOURCES, _object_names(), strict=True)
    }

    def compile_one(source: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        proc = subprocess.run(commands[source], cwd=stage, capture_output=True, text=True)
        return proc, time.monotonic() - t0

    t0 = time.monotonic()
    _log.step("building TVM's wasm runtime (once per TVM/emcc version; takes a few minutes)")
    for cmd in commands.values():
        _log.detail("> " + " ".join(cmd))
    # The largest source first: with two cores, the other two compile while it runs. (Worker threads
    # do not see the reporter's contextvar, so all logging stays on this thread.)
    workers = max(1, min(len(RUNTIME_SOURCES), os.cpu_count() or 1))
    with _log.bar(len(RUNTIME_SOURCES), "runtime objects", unit="obj") as bar, ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(compile_one, source): source for source in RUNTIME_SOURCES}
        for future in as_completed(futures):
            source = futures[future]
            proc, seconds = future.result()
            if proc.returncode != 0:
                raise BuildError(
                    f"emcc failed to compile TVM's web runtime source {source}:\n{_tail(proc.stderr)}",
                    tip="the headers in webbuild/build/wasm_runtime may not match this TVM version; "
                    "`webbuild doctor` shows the versions",
                )
            _log.detail(f"{source} compiled in {seconds:.0f}s")
            bar.update(1)
    shutil.rmtree(stage, ignore_errors=True)
    _log.detail(f"wasm runtime built in {time.monotonic() - t0:.0f}s")


# --- linking a model library ------------------------------------------------------------------------------


class _EmccLinker:
    """The ``fcompile`` for ``export_library``: links TVM's host objects with the runtime objects.

    ``object_format = "o"`` makes TVM write wasm object files rather than LLVM-22 bitcode.
    """

    object_format = "o"

    def __init__(self, emcc: str, runtime_objects: Sequence[Path]) -> None:
        self.emcc = emcc
        self.runtime_objects = [str(p) for p in runtime_objects]

    def __call__(self, output: str, objects: Sequence[str], options: Sequence[str] | None = None, **_: Any) -> None:
        cmd = [self.emcc, *LINK_FLAGS, "-o", output, *self.runtime_objects, *objects, *(options or [])]
        proc = _run(cmd)
        if proc.returncode != 0:
            raise BuildError(
                f"emcc failed to link {Path(output).name}:\n{_tail(proc.stderr)}",
                tip="re-run with -v to see the emcc command",
            )
        wasm_opt = shutil.which("wasm-opt")
        if wasm_opt:
            proc = _run([wasm_opt, *WASM_OPT_FLAGS, output, "-o", output])
            if proc.returncode != 0:
                raise BuildError(f"wasm-opt failed on {Path(output).name}:\n{_tail(proc.stderr)}")


def link_model_library(executable: Any, out_path: Path) -> Path:
    """Links ``executable`` (``tvm.compile`` for ``webgpu`` with a wasm32 llvm host) into ``out_path``.

    The runtime objects are built first if they are not cached. The library is written to a temp file next
    to ``out_path`` and renamed only when emcc succeeded and its imports are ones tvmjs provides, so a
    failure never leaves a partial file.
    """
    out_path = Path(out_path)
    emcc = find_emcc()
    runtime_objects = build_runtime()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # emcc picks its output kind from the suffix, so the temp name must end in .wasm.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".tmp.wasm", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(prefix="webbuild-link-") as work:
            t0 = time.monotonic()
            executable.export_library(str(tmp), fcompile=_EmccLinker(emcc, runtime_objects), workspace_dir=work)
            _log.detail(f"linked {out_path.name} in {time.monotonic() - t0:.0f}s ({tmp.stat().st_size:,} bytes)")
        check_imports(tmp, name=out_path.name)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


# --- checking what a library imports ------------------------------------------------------------------------


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _name(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _uleb(data, pos)
    return data[pos : pos + size].decode("utf-8"), pos + size


def _limits(data: bytes, pos: int) -> int:
    flags = data[pos]
    _, pos = _uleb(data, pos + 1)
    if flags & 1:  # has a maximum
        _, pos = _uleb(data, pos)
    return pos


_IMPORT_KINDS = {0: "function", 1: "table", 2: "memory", 3: "global", 4: "tag"}
_SECTION_NAMES = {
    1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global", 7: "export", 8: "start",
    9: "element", 10: "code", 11: "data", 12: "data count", 13: "tag",
}  # fmt: skip


@dataclass(frozen=True)
class WasmSection:
    id: int  # 0 for a custom section
    name: str  # "code", "data", ...; a custom section's own name ("name", "target_features")
    start: int  # offset of the section's contents in the binary
    size: int


def _wasm_bytes(path: Path) -> bytes:
    data = Path(path).read_bytes()
    if data[:4] != b"\0asm" or struct.unpack("<I", data[4:8])[0] != 1:
        raise BuildError(f"{path} is not a WebAssembly module")
    return data


def _sections(data: bytes, path: Path) -> list[WasmSection]:
    sections, pos = [], 8
    try:
        while pos < len(data):
            section_id, pos = data[pos], pos + 1
            size, pos = _uleb(data, pos)
            if pos + size > len(data):
                raise ValueError(f"section {section_id} runs past the end of the file")
            name = _name(data, pos)[0] if section_id == 0 else _SECTION_NAMES.get(section_id, str(section_id))
            sections.append(WasmSection(section_id, name, pos, size))
            pos += size
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path} is not a well-formed WebAssembly module: {exc}") from exc
    return sections


def wasm_sections(path: Path) -> list[WasmSection]:
    """The sections of a wasm binary, in order: what a model library spends its bytes on."""
    return _sections(_wasm_bytes(path), path)


def wasm_imports(path: Path) -> list[tuple[str, str, str]]:
    """(module, name, kind) of every import of a wasm binary, read from its import section."""
    data = _wasm_bytes(path)
    section = next((s for s in _sections(data, path) if s.id == 2), None)
    if section is None:
        return []
    try:
        count, pos = _uleb(data, section.start)
        imports = []
        for _ in range(count):
            module, pos = _name(data, pos)
            field, pos = _name(data, pos)
            kind, pos = data[pos], pos + 1
            if kind in (0, 4):  # function: type index; tag: attribute byte + type index
                pos = _uleb(data, pos + (kind == 4))[1]
            elif kind == 1:  # table: element type + limits
                pos = _limits(data, pos + 1)
            elif kind == 2:
                pos = _limits(data, pos)
            elif kind == 3:  # global: value type + mutability
                pos += 2
            else:
                raise ValueError(f"unknown import kind {kind}")
            imports.append((module, field, _IMPORT_KINDS[kind]))
        return imports
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path} has a malformed import section: {exc}") from exc


def check_imports(path: Path, *, name: str | None = None) -> None:
    """Raises BuildError if the library imports anything tvmjs does not provide (it would fail to load)."""
    extra = sorted(f"{m}.{n}" for m, n, _ in wasm_imports(path) if (m, n) not in ALLOWED_IMPORTS)
    if extra:
        raise BuildError(
            f"{name or Path(path).name} imports {', '.join(extra)}, which the tvmjs runtime does not provide; "
            "it would fail to load in the browser",
            tip="an unresolved C/C++ symbol becomes an import: a kernel or runtime call with no definition "
            "in the runtime objects",
        )
