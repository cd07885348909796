#!/usr/bin/env bash
# Prepares .carry/ for scripts/gpu_machine.sh (a GPU machine with python3.12 and no registry), from this
# checkout's .venv (transformers included, for the tiny family models) and optionally a built site (for
# `gpu_machine.sh run`'s throughput figures). The compiler library goes alone in .carry/a (each transfer is capped).
# $CARRY names another folder (scripts/make_gpu_browser_carry.sh takes the pieces from one).
# Usage: bash scripts/make_gpu_carry.sh [dist/smollm2-135m-instruct]
set -euo pipefail
site="${1:-}"
carry="${CARRY:-.carry}"
sp="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$carry" && mkdir -p "$carry/a" "$carry/b/whl"
xz -T0 -6 -c "$sp/tvm/lib/libtvm_compiler.so" > "$carry/a/libtvm_compiler.so.xz"
tar -C "$sp" -cJf "$carry/b/tvm_rest.tar.xz" --exclude=tvm/lib/libtvm_compiler.so --exclude=tvm/3rdparty \
  --exclude=tvm/src --exclude=tvm/web --exclude=__pycache__ tvm "$(basename "$sp"/apache_tvm-*.dist-info)"
# The pure-python and 3.12 wheels the CUDA checks import, at the versions this checkout's .venv tested.
pins="$(.venv/bin/python - <<'PY'
import importlib.metadata as m
import re

# What the CUDA checks import, with everything those need (numpy is on the GPU machine already).
todo = ["apache-tvm-ffi", "gguf", "tqdm", "ml_dtypes", "pytest", "jinja2", "starlette", "uvicorn", "httpx",
        "prometheus_client", "tokenizers", "safetensors", "openai"]
seen = {}
while todo:
    name = re.split(r"[ <>=!~;\[(]", todo.pop())[0].lower().replace("_", "-")
    if name in seen or name == "numpy":
        continue
    try:
        dist = m.distribution(name)
    except m.PackageNotFoundError:
        continue
    seen[name] = dist.version
    todo += [r for r in dist.requires or [] if "extra ==" not in r]
print(" ".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PY
)"
# shellcheck disable=SC2086
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$carry/b/whl" \
  $pins
.venv/bin/python scripts/make_tiny_families.py "$carry/b/families"
if [ -z "$site" ]; then du -sh "$carry/a" "$carry/b"; exit 0; fi
model="$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["default_variant"])' "$site/manifest.json")"
mkdir -p "$carry/b/site/models/$model"
cp "$site/manifest.json" "$carry/b/site/"
cp "$site/models/$model"/*.json "$carry/b/site/models/$model/"
du -sh "$carry/a" "$carry/b"
