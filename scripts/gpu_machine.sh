#!/usr/bin/env bash
# Runs the CUDA checks and figures on a GPU machine that has python3.12 + nvcc but no package registry.
# Everything it needs is carried in .carry/ (see scripts/make_gpu_carry.sh, run where pip works):
#   .carry/a/libtvm_compiler.so.xz   (first call: stashed in /tmp/webbuild-carry, too big to travel with the rest)
#   .carry/b/tvm_rest.tar.xz, .carry/b/whl/*.whl, .carry/b/families/ (tiny HF models, scripts/make_tiny_families.py),
#   .carry/b/site/ (a site's configs + tokenizer, no weights; when make_gpu_carry.sh was given one)
# Usage: bash scripts/gpu_machine.sh stash | run | families
#   run:      the engine tests, the REST suite on the CUDA engine, the engine throughput benchmark
#   families: every family on the CUDA engine against the CPU engine (benchmarks/families_cuda.py's table, written
#             to $OUT/families_cuda.md when OUT is set, then tests/build/arch/test_families_cuda.py)
set -euo pipefail
stash=/tmp/webbuild-carry
site=/tmp/webbuild-site

environment() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .carry/b/whl/*.whl
  tar -C "$site" -xJf .carry/b/tvm_rest.tar.xz
  xz -dc "$stash/libtvm_compiler.so.xz" > "$site/tvm/lib/libtvm_compiler.so"
  export PYTHONPATH="$site:$PWD" WEBBUILD_CACHE=/tmp/webbuild-cache PYTHONUNBUFFERED=1
  python3 -c "import tvm; print('tvm', tvm.__version__, 'cuda', tvm.cuda(0).exist)"
}

case "${1:-run}" in
  stash)
    mkdir -p "$stash" && cp .carry/a/libtvm_compiler.so.xz "$stash/"
    nvidia-smi -L
    ;;
  run)
    environment
    python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/engine/test_engine_cuda.py tests/engine/test_engine.py 2>&1 | tail -15
    # The REST API suite (real uvicorn + the openai client) on the CUDA engine.
    python3 -m pytest -q -p no:cacheprovider -o addopts="" --engine-device cuda -m "not slow" \
      tests/serve/test_routes_openai_client.py tests/serve/test_routes_tools.py 2>&1 | tail -15
    python3 benchmarks/engine_throughput.py .carry/b/site --device cuda --random-weights --concurrency 1,4,16
    ;;
  families)
    environment
    export WEBBUILD_TINY_FAMILIES="$PWD/.carry/b/families"
    # The table first, its runs in parallel processes: they compile every library into the cache the tests reuse.
    python3 benchmarks/families_cuda.py "$WEBBUILD_TINY_FAMILIES" --jobs "${JOBS:-8}" ${OUT:+--out "$OUT/families_cuda.md"}
    python3 -m pytest -q -p no:cacheprovider -o addopts="" -rA tests/build/arch/test_families_cuda.py 2>&1 | tail -30
    ;;
esac
