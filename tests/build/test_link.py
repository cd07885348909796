"""webbuild.build.link: TVM's wasm runtime built with our headers, model libraries linked with emcc and loadable
by tvmjs.

Toolchain tests rely on the cached runtime objects (~2 min to build the first time) and link two tiny
libraries: a WebGPU one, and a CPU-only one that Node can run.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from webbuild.build import link
from webbuild.build.link import ALLOWED_IMPORTS, check_imports, link_model_library, wasm_imports, wasm_sections
from webbuild.errors import BuildError, ToolchainError

REPO = Path(__file__).resolve().parents[2]
RUN_WASM = REPO / "tests" / "js" / "run_wasm.mjs"
KV_BUILTINS = [
    "vm.builtin.paged_attention_kv_cache_create",
    "vm.builtin.kv_state_add_sequence",
    "vm.builtin.kv_state_remove_sequence",
    "vm.builtin.kv_state_begin_forward",
    "vm.builtin.kv_state_end_forward",
    "vm.builtin.kv_state_clear",
]


# --- a tiny wasm writer, to test the import checks without a toolchain --------------------------------------


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    return _leb(len(s)) + s.encode()


def wasm_with_imports(imports: list[tuple[str, str, bytes]]) -> bytes:
    """A module with one function type and the given imports (module, name, kind byte + descriptor)."""
    types = _leb(1) + b"\x60\x00\x00"  # one type: () -> ()
    body = _leb(len(imports)) + b"".join(_str(m) + _str(n) + desc for m, n, desc in imports)
    return (
        b"\0asm" + struct.pack("<I", 1)
        + b"\x01" + _leb(len(types)) + types
        + b"\x02" + _leb(len(body)) + body
    )  # fmt: skip


FUNC = b"\x00\x00"  # function import of type 0


def test_wasm_imports_reads_every_import_kind(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(
        wasm_with_imports(
            [
                ("env", "f", FUNC),
                ("env", "table", b"\x01\x70\x01\x01\x10"),  # funcref table, min 1 max 16
                ("env", "memory", b"\x02\x00" + _leb(256)),
                ("env", "g", b"\x03\x7f\x01"),  # mutable i32 global
                ("wasi_snapshot_preview1", "fd_write", FUNC),
            ]
        )
    )
    assert wasm_imports(path) == [
        ("env", "f", "function"),
        ("env", "table", "table"),
        ("env", "memory", "memory"),
        ("env", "g", "global"),
        ("wasi_snapshot_preview1", "fd_write", "function"),
    ]


def test_wasm_imports_of_a_module_without_imports_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(b"\0asm" + struct.pack("<I", 1))
    assert wasm_imports(path) == []


def test_wasm_imports_rejects_non_wasm(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(b"<!doctype html>")
    with pytest.raises(BuildError, match="not a WebAssembly module"):
        wasm_imports(path)


def test_wasm_sections_lists_each_section_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    custom = _str("target_features") + b"\x01+\x08mutable-globals"
    module = wasm_with_imports([("env", "f", FUNC)])
    path.write_bytes(module + b"\x00" + _leb(len(custom)) + custom)
    sections = wasm_sections(path)
    assert [(s.id, s.name, s.size) for s in sections] == [
        (1, "type", 4),
        (2, "import", len(_leb(1) + _str("env") + _str("f") + FUNC)),
        (0, "target_features", len(custom)),
    ]
    assert path.read_bytes()[sections[1].start : sections[1].start + sections[1].size].startswith(b"\x01\x03env")
    path.write_bytes(module[:-2])  # the import section cut short
    with pytest.raises(BuildError, match="not a well-formed WebAssembly module"):
        wasm_sections(path)


def test_check_imports_accepts_what_tvmjs_provides(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(wasm_with_imports([(m, n, FUNC) for m, n in sorted(ALLOWED_IMPORTS)]))
    check_imports(path)


def test_check_imports_names_the_unknown_import(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(wasm_with_imports([("env", "TVMFFIWasmSafeCall", FUNC), ("env", "sinhf", FUNC)]))
    with pytest.raises(BuildError, match=r"env\.sinhf") as err:
        check_imports(path)
    assert "TVMFFIWasmSafeCall" not in err.value.message


# --- linking with a stand-in emcc: failures leave nothing behind ------------------------------------------


class FakeExecutable:
    """Calls fcompile the way ``export_library`` does, with one host object."""

    def export_library(self, file_name: str, *, fcompile: Any, workspace_dir: str, **kwargs: Any) -> None:
        assert getattr(fcompile, "object_format", None) == "o"
        obj = Path(workspace_dir) / "lib0.o"
        obj.write_bytes(b"not really an object")
        fcompile(file_name, [str(obj)], **kwargs)


def fake_emcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Puts an ``emcc`` shell script (and a ``wasm-opt`` that leaves its output alone) first on PATH and skips the
    runtime build."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("emcc", script), ("wasm-opt", "exit 0\n")):
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(link, "build_runtime", lambda: [tmp_path / "runtime.o"])


def output_arg() -> str:
    """Shell snippet: the path after ``-o``."""
    return 'out=""; prev=""; for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done; '


def test_failed_link_raises_build_error_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_emcc(tmp_path, monkeypatch, output_arg() + 'echo partial > "$out"; echo "wasm-ld: error: boom" >&2; exit 1\n')
    out_dir = tmp_path / "libs"
    with pytest.raises(BuildError, match="wasm-ld: error: boom"):
        link_model_library(FakeExecutable(), out_dir / "m-webgpu.wasm")
    assert list(out_dir.iterdir()) == []


def test_library_with_foreign_imports_is_rejected_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(wasm_with_imports([("env", "TVMFFIWasmSafeCall", FUNC), ("env", "__cxa_throw", FUNC)]))
    fake_emcc(tmp_path, monkeypatch, output_arg() + f'cp "{bad}" "$out"\n')
    out = tmp_path / "libs" / "m-webgpu.wasm"
    out.parent.mkdir()
    out.write_bytes(b"previous good build")
    with pytest.raises(BuildError, match="__cxa_throw"):
        link_model_library(FakeExecutable(), out)
    assert out.read_bytes() == b"previous good build"
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_successful_link_writes_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.wasm"
    good.write_bytes(wasm_with_imports([("env", "TVMFFIWasmSafeCall", FUNC)]))
    fake_emcc(tmp_path, monkeypatch, output_arg() + f'cp "{good}" "$out"\n')
    out = link_model_library(FakeExecutable(), tmp_path / "libs" / "m-webgpu.wasm")
    assert out.read_bytes() == good.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_missing_emcc_is_a_toolchain_error_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ToolchainError) as err:
        link.find_emcc()
    assert err.value.tip is not None and "apt-get install emscripten" in err.value.tip


def test_headers_cover_what_the_wheel_lacks() -> None:
    expected = {
        "3rdparty/compiler-rt/builtin_fp16.h",
        "include/tvm/support/io.h",
        "include/tvm/support/serializer.h",
        "include/tvm/support/cuda/nvtx.h",
        "src/support/bytes_io.h",
        "src/support/base64.h",
        "src/support/utils.h",
        "src/support/arena.h",
        "src/support/ring_buffer.h",
    }
    assert {p.relative_to(link.HEADERS_DIR).as_posix() for p in link._header_files()} == expected


# --- the real toolchain -------------------------------------------------------------------------------------


def run_wasm(lib: Path, request: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", str(RUN_WASM), str(lib)], input=json.dumps(request), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def runtime_objects() -> list[Path]:
    return link.build_runtime()


@pytest.fixture(scope="module")
def tiny_libs(tmp_path_factory: pytest.TempPathFactory, runtime_objects: list[Path]) -> dict[str, Any]:
    """A Linear + a reduction, compiled for WebGPU (wasm host) and for wasm CPU, linked; plus its weight."""
    import tvm
    from tvm.relax.frontend import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            self.proj = nn.Linear(16, 8, bias=False)

        def forward(self, x: nn.Tensor) -> nn.Tensor:
            return nn.op.sum(self.proj(x), axis=-1)

    mod, _ = Tiny().export_tvm(spec={"forward": {"x": nn.spec.Tensor([4, 16], "float32")}})
    host = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
    out = tmp_path_factory.mktemp("libs")
    webgpu = tvm.compile(mod, target=tvm.target.Target("webgpu", host=host))
    cpu = tvm.compile(mod, target=tvm.target.Target(host))
    return {
        "webgpu": link_model_library(webgpu, out / "tiny-webgpu.wasm"),
        "cpu": link_model_library(cpu, out / "tiny-cpu.wasm"),
    }


@pytest.mark.toolchain
def test_runtime_objects_are_cached(runtime_objects: list[Path]) -> None:
    assert [p.name for p in runtime_objects] == ["wasm_runtime.o", "webgpu_runtime.o", "tvmjs_support.o"]
    assert all(p.stat().st_size > 0 for p in runtime_objects)
    assert link.cached_runtime() == runtime_objects[0].parent
    assert link.build_runtime() == runtime_objects  # second call: straight from the cache


@pytest.mark.toolchain
@pytest.mark.parametrize("kind", ["webgpu", "cpu"])
def test_library_imports_only_what_tvmjs_provides(tiny_libs: dict[str, Path], kind: str) -> None:
    imports = {(m, n) for m, n, _ in wasm_imports(tiny_libs[kind])}
    assert imports <= ALLOWED_IMPORTS
    assert ("env", "TVMFFIWasmSafeCall") in imports


@pytest.mark.toolchain
def test_webgpu_library_loads_in_tvmjs(tiny_libs: dict[str, Path]) -> None:
    request = {"functions": ["forward", "missing"], "kernels": True, "globals": KV_BUILTINS}
    reply = run_wasm(tiny_libs["webgpu"], request)
    assert reply["functions"] == {"forward": True, "missing": False}
    # The WebGPU kernel table went through our serializer headers: names and launch tags came back.
    assert len(reply["kernels"]) >= 2 and any("sum" in k for k in reply["kernels"])
    assert reply["globals"] == dict.fromkeys(KV_BUILTINS, True)


@pytest.mark.toolchain
def test_cpu_library_matches_numpy(tiny_libs: dict[str, Path]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16), dtype=np.float32)
    w = rng.standard_normal((8, 16), dtype=np.float32)
    args = [{"shape": list(a.shape), "dtype": "float32", "data": a.ravel().tolist()} for a in (x, w)]
    reply = run_wasm(tiny_libs["cpu"], {"call": {"name": "forward", "args": args}})
    assert reply["result"]["shape"] == [4]
    np.testing.assert_allclose(reply["result"]["data"], (x @ w.T).sum(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.toolchain
def test_vm_errors_reach_javascript_with_tvms_message(tiny_libs: dict[str, Path]) -> None:
    args = [
        {"shape": [1, 16], "dtype": "float32", "data": [0.0] * 16},
        {"shape": [8, 16], "dtype": "float32", "data": [0.0] * 128},
    ]
    proc = subprocess.run(
        ["node", str(RUN_WASM), str(tiny_libs["cpu"])],
        input=json.dumps({"call": {"name": "forward", "args": args}}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "match_cast" in proc.stderr or "mismatch" in proc.stderr


# --- our headers, exercised directly ------------------------------------------------------------------------

HEADER_TEST = r"""
#include <tvm/support/cuda/nvtx.h>
#include <tvm/support/io.h>
#include <tvm/support/serializer.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "builtin_fp16.h"
#include "src/support/arena.h"
#include "src/support/base64.h"
#include "src/support/bytes_io.h"
#include "src/support/ring_buffer.h"
#include "src/support/utils.h"

using namespace tvm;
using namespace tvm::support;

enum class Tag : int { kA = 7 };

static std::string Hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) { out.push_back(digits[c >> 4]); out.push_back(digits[c & 15]); }
  return out;
}

int main() {
  std::string blob;
  BytesOutStream out(&blob);
  out.Write(uint64_t{0x1122334455667788ull});
  out.Write(std::string("hi"));
  out.Write(std::vector<int64_t>{1, -2});
  out.Write(std::vector<std::string>{"a", "bc"});
  out.Write(DLDataType{2, 32, 1});
  out.Write(DLDevice{kDLWebGPU, 3});
  out.Write(Tag::kA);
  out.Write(std::unordered_map<std::string, std::string>{{"k", "v"}});
  ffi::Map<ffi::String, ffi::Array<ffi::String>> fmap;
  fmap.Set("f", ffi::Array<ffi::String>{"x", "yz"});
  out.Write(fmap);
  out.Write(3.5);
  std::printf("layout %s\n", Hex(blob).c_str());

  BytesInStream in(blob);
  uint64_t magic; std::string s; std::vector<int64_t> v; std::vector<std::string> vs; DLDataType dt; DLDevice dev;
  Tag tag; std::unordered_map<std::string, std::string> um; ffi::Map<ffi::String, ffi::Array<ffi::String>> fm;
  double dbl; int64_t past_end;
  bool ok = in.Read(&magic) && in.Read(&s) && in.Read(&v) && in.Read(&vs) && in.Read(&dt) && in.Read(&dev) &&
            in.Read(&tag) && in.Read(&um) && in.Read(&fm) && in.Read(&dbl);
  ok = ok && magic == 0x1122334455667788ull && s == "hi" && v == std::vector<int64_t>{1, -2} &&
       vs == std::vector<std::string>{"a", "bc"} && dt.code == 2 && dt.bits == 32 && dt.lanes == 1 &&
       dev.device_type == kDLWebGPU && dev.device_id == 3 && tag == Tag::kA && um.at("k") == "v" &&
       fm.size() == 1 && fm.at("f").size() == 2 && fm.at("f")[1] == "yz" && dbl == 3.5 && !in.Read(&past_end);
  std::printf("roundtrip %d\n", ok ? 1 : 0);

  const std::string bytes("\x00\x01\xfe\xff" "webbuild", 12);
  for (size_t n = 0; n <= bytes.size(); ++n) {
    std::string text;
    BytesOutStream sink(&text);
    Base64OutStream enc(&sink);
    enc.Write(bytes.data(), n);
    enc.Finish();
    std::string quoted = "  \n" + text + "\"";  // JSON-ish: leading space, a closing quote after the data
    BytesInStream src(quoted);
    Base64InStream dec(&src);
    dec.InitPosition();
    std::string back(n + 4, '?');
    back.resize(dec.Read(&back[0], back.size()));
    std::printf("base64 %zu [%s] %d\n", n, text.c_str(), back == bytes.substr(0, n) ? 1 : 0);
  }

  RingBuffer ring;
  std::deque<char> model;
  unsigned seed = 1;
  bool ring_ok = true;
  for (int step = 0; step < 4000; ++step) {
    seed = seed * 1103515245u + 12345u;
    size_t n = (seed >> 8) % 700;
    bool use_callback = (seed >> 21) & 1;
    if ((seed >> 20) & 1) {
      std::string chunk(n, 0);
      for (size_t i = 0; i < n; ++i) chunk[i] = static_cast<char>(step + i);
      if (!use_callback) {
        ring.Write(chunk.data(), n);
      } else {
        for (size_t done = 0; done < n;) {
          done += ring.WriteWithCallback([&](void* dst, size_t max) {
            size_t k = std::min(max, n - done);
            std::memcpy(dst, chunk.data() + done, k);
            return k;
          }, n - done);
        }
      }
      model.insert(model.end(), chunk.begin(), chunk.end());
    } else {
      n = std::min(n, model.size());
      std::string got(n, 0);
      if (!use_callback) {
        ring.Read(&got[0], n);
      } else {
        for (size_t done = 0; done < n;) {
          done += ring.ReadWithCallback([&](const void* src, size_t k) {
            std::memcpy(&got[done], src, k);
            return k;
          }, n - done);
        }
      }
      ring_ok = ring_ok && std::equal(got.begin(), got.end(), model.begin());
      model.erase(model.begin(), model.begin() + n);
    }
    ring_ok = ring_ok && ring.bytes_available() == model.size();
  }
  std::printf("ring %d\n", ring_ok ? 1 : 0);

  Arena arena;
  bool arena_ok = true;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::pair<char*, size_t>> blocks;
    for (int i = 0; i < 300; ++i) {
      size_t n = (i * 37) % 500 + 1 + (i % 50 == 0 ? 40000 : 0);
      double* d = arena.allocate_<double>(1);
      arena_ok = arena_ok && reinterpret_cast<uintptr_t>(d) % alignof(double) == 0;
      *d = i;
      char* c = arena.allocate_<char>(n);
      std::memset(c, i & 0xff, n);
      blocks.push_back({c, n});
      blocks.push_back({reinterpret_cast<char*>(d), sizeof(double)});
    }
    for (size_t i = 0; i < blocks.size(); i += 2) {
      for (size_t k = 0; k < blocks[i].second; ++k) arena_ok = arena_ok && blocks[i].first[k] == char((i / 2) & 0xff);
      arena_ok = arena_ok && *reinterpret_cast<double*>(blocks[i + 1].first) == double(i / 2);
    }
    arena.RecycleAll();
  }
  std::printf("arena %d\n", arena_ok ? 1 : 0);
  std::printf("starts_with %d\n",
              StartsWith("RPCSessionTimeoutError: x", "RPCSessionTimeoutError: ") && !StartsWith("RPC", "RPCS"));
  { NVTXScopedRange a("x"); NVTXScopedRange b(std::string("y")); }

  std::string halves;
  char buf[16];
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(static_cast<uint16_t>(h));
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    std::snprintf(buf, sizeof(buf), "%08x", bits);
    halves += buf;
  }
  std::printf("fp16 %s\n", halves.c_str());
  return 0;
}
"""


@pytest.fixture(scope="module")
def header_test_output(tmp_path_factory: pytest.TempPathFactory, runtime_objects: list[Path]) -> dict[str, str]:
    """Builds HEADER_TEST with emcc against the runtime objects (for tvm-ffi's symbols) and runs it in Node."""
    import tvm_ffi

    work = tmp_path_factory.mktemp("headers")
    (work / "t.cc").write_text(HEADER_TEST)
    ffi = Path(tvm_ffi.__file__).parent
    h = link.HEADERS_DIR
    cmd = [link.find_emcc(), "-O1", "-std=c++17", "-Wno-ignored-attributes",
           f"-I{h}", f"-I{h / 'include'}", f"-I{h / '3rdparty' / 'compiler-rt'}",
           f"-I{ffi / 'include'}", f"-I{ffi / '3rdparty' / 'dlpack' / 'include'}",
           "t.cc", *map(str, runtime_objects), "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0", "-s", "ENVIRONMENT=node",
           "-o", "t.js"]  # fmt: skip
    built = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    # emcc 3.1.6's glue would fetch() the .wasm under Node 18+; make it read the file instead.
    ran = subprocess.run(["node", "--no-experimental-fetch", "t.js"], cwd=work, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    lines: dict[str, str] = {}
    for line in ran.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "base64":  # "base64 <n> [<text>] <ok>": one entry per length
            n, _, value = value.partition(" ")
            key = f"base64 {n}"
        lines[key] = value
    return lines


@pytest.mark.toolchain
def test_serializer_writes_tvms_byte_layout(header_test_output: dict[str, str]) -> None:
    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    expected = b"".join([
        struct.pack("<Q", 0x1122334455667788),
        s("hi"),
        struct.pack("<Qqq", 2, 1, -2),
        struct.pack("<Q", 2) + s("a") + s("bc"),
        struct.pack("<BBH", 2, 32, 1),  # DLDataType: code, bits, lanes
        struct.pack("<ii", 15, 3),  # DLDevice: kDLWebGPU, id
        struct.pack("<i", 7),  # enum as its underlying int
        struct.pack("<Q", 1) + s("k") + s("v"),
        struct.pack("<Q", 1) + s("f") + struct.pack("<Q", 2) + s("x") + s("yz"),
        struct.pack("<d", 3.5),
    ])  # fmt: skip
    assert bytes.fromhex(header_test_output["layout"]) == expected
    assert header_test_output["roundtrip"] == "1"


@pytest.mark.toolchain
def test_base64_streams_match_python(header_test_output: dict[str, str]) -> None:
    data = b"\x00\x01\xfe\xffwebbuild"
    for n in range(len(data) + 1):
        text, decoded_ok = header_test_output[f"base64 {n}"].split(" ")
        assert text == f"[{base64.b64encode(data[:n]).decode()}]"
        assert decoded_ok == "1"


@pytest.mark.toolchain
def test_ring_buffer_arena_and_string_helpers(header_test_output: dict[str, str]) -> None:
    assert header_test_output["ring"] == "1"
    assert header_test_output["arena"] == "1"
    assert header_test_output["starts_with"] == "1"


@pytest.mark.toolchain
def test_half_to_float_matches_numpy_for_every_bit_pattern(header_test_output: dict[str, str]) -> None:
    got = np.frombuffer(bytes.fromhex(header_test_output["fp16"]), dtype=">u4").astype(np.uint32)
    want = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got[~nan], want[~nan].view(np.uint32))
    assert np.isnan(got.view(np.float32)[nan]).all()
