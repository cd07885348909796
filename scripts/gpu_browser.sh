#!/usr/bin/env bash
# `webbuild bench` on a GPU machine: the site in headless Chromium, WebGPU on NVIDIA's Vulkan driver, beside the
# CUDA engine on the same GPU, in one run; prints the table (and the profile) and writes JSON to $OUT. What it
# needs comes from scripts/make_gpu_browser_carry.sh, one piece per `run` call, each call starting with
#   bash scripts/gpu_browser.sh stash               (copies whatever piece of $GPU_CARRY travelled to $WB at once)
# and after the last piece
#   bash scripts/gpu_browser.sh bench SITE_NAME [webbuild bench options]      (e.g. --max-tokens 128 --profile)
#   bash scripts/gpu_browser.sh verify SITE_NAME [webbuild verify options]   (e.g. --reference cuda; JSON to $OUT)
#   bash scripts/gpu_browser.sh python SCRIPT [ARGS]     (the same environment: carried TVM, wheels, checkout)
# Environment: WB (default /tmp/wb), GPU_CARRY (default .gpu), OUT (JSON; default $WB/out), ENGINES (default
# cuda,browser), BROWSER_FLAGS (default: the flags that give WebGPU on the GPU's Vulkan driver), GL_ROOT (where
# the loader debs are unpacked when the system has no Vulkan loader; default /).
set -euo pipefail
wb="${WB:-/tmp/wb}"
carry="${GPU_CARRY:-.gpu}"
out="${OUT:-$wb/out}"
# --use-angle=vulkan is the one that matters: without it the GPU process stays in software GL and WebGPU offers
# only SwiftShader. Without a Vulkan GPU these flags give no adapter at all.
flags="${BROWSER_FLAGS-"--use-angle=vulkan --enable-features=Vulkan --disable-vulkan-surface --enable-unsafe-webgpu"}"

stash() {
  mkdir -p "$wb/parts"
  if [ -d "$carry/chs" ]; then
    mkdir -p "$wb/chr"
    xz -dc "$carry/chs/chromium-headless-shell.xz" > "$wb/chr/chromium-headless-shell"
    chmod +x "$wb/chr/chromium-headless-shell"
  fi
  if [ -d "$carry/tvm" ]; then cp "$carry/tvm/libtvm_compiler.so.xz" "$wb/"; fi
  if [ -d "$carry/rest" ]; then
    tar -C "$wb" -xzf "$carry/rest/chromium.tar.gz"
    tar -C "$wb" -xzf "$carry/rest/sites.tar.gz"
    mkdir -p "$wb/gl" && cp "$carry/rest/gl/"*.deb "$wb/gl/"
    if [ -f "$carry/rest/wheels.tar" ]; then
      tar -C "$wb" -xf "$carry/rest/wheels.tar"
      cp "$carry/rest/tvm_rest.tar.xz" "$wb/"
    fi
  fi
  for piece in "$carry"/w[0-9]*; do
    if [ -d "$piece" ]; then cp "$piece"/shards.part* "$wb/parts/"; fi
  done
  ls "$wb"
}

setup() {
  if ls "$wb"/parts/shards.part* >/dev/null 2>&1; then
    cat "$wb"/parts/shards.part* | xz -dc | tar -C "$wb" -xf - && rm -f "$wb"/parts/shards.part*
  fi
  # The Vulkan and GL loaders (Debian's) where the system has none; GL_ROOT only for tests elsewhere.
  if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
    for deb in "$wb"/gl/*.deb; do dpkg -x "$deb" "${GL_ROOT:-/}"; done
    ldconfig
  fi
  # Only the libraries the system lacks: the rest come from the system, as glibc does.
  mkdir -p "$wb/needlib"
  local have
  have="$(ldconfig -p)"
  for lib in "$wb"/chr/lib/*; do
    grep -q "^[[:space:]]*$(basename "$lib") (" <<< "$have" || ln -sf "$lib" "$wb/needlib/"
  done
  cat > "$wb/chr/fonts/fonts.conf" <<FONTS
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><dir>$wb/chr/fonts</dir><cachedir>$wb/fontcache</cachedir></fontconfig>
FONTS
  if [ -f "$wb/tvm_rest.tar.xz" ] && [ ! -d "$wb/py/tvm" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$wb/py" "$wb"/whl/*.whl
    tar -C "$wb/py" -xJf "$wb/tvm_rest.tar.xz"
    xz -dc "$wb/libtvm_compiler.so.xz" > "$wb/py/tvm/lib/libtvm_compiler.so"
  fi
  # Sites carried without their weights (make_gpu_browser_carry.sh with WEIGHTS=random) get random ones.
  python3 "$(dirname "$0")/random_weights.py" --if-missing "$wb"/sites/*/
}

environment() {
  setup
  mkdir -p "$out"
  export PYTHONPATH="$wb/py:$PWD" WEBBUILD_CACHE="$wb/cache" XDG_RUNTIME_DIR=/tmp PYTHONUNBUFFERED=1
  export LD_LIBRARY_PATH="$wb/needlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export FONTCONFIG_FILE="$wb/chr/fonts/fonts.conf"  # the carried fonts (the machine has none)
}

case "${1:-}" in
  stash)
    stash
    ;;
  bench)
    site="${2:?usage: gpu_browser.sh bench SITE_NAME [webbuild bench options]}"
    shift 2
    environment
    browser_flags=()
    for flag in $flags; do browser_flags+=("--browser-flag=$flag"); done
    python3 -c 'import sys; from webbuild.cli import main; sys.exit(main(sys.argv[1:]))' \
      bench "$wb/sites/$site" --engines "${ENGINES:-cuda,browser}" --browser "$wb/chr/chromium-headless-shell" \
      "${browser_flags[@]}" --out "$out/bench-$site.json" "$@"
    ;;
  verify)  # the references score the site's own weights: the machine cannot fetch the source model
    site="${2:?usage: gpu_browser.sh verify SITE_NAME [webbuild verify options]}"
    shift 2
    environment
    status=0
    WEBBUILD_CHROMIUM="$wb/chr/chromium-headless-shell" WEBBUILD_CHROMIUM_FLAGS="$flags" \
      python3 -c 'import sys; from webbuild.cli import main; sys.exit(main(sys.argv[1:]))' \
      verify "$wb/sites/$site" --json "$@" > "$out/verify-$site.json" || status=$?
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(json.dumps(r.get("overall", r), indent=1))' \
      "$out/verify-$site.json" || true
    exit "$status"
    ;;
  python)  # anything else with the same environment, e.g. benchmarks/engine_throughput.py "$WB/sites/NAME" ...
    shift
    environment
    python3 "$@"
    ;;
  *)
    echo "usage: gpu_browser.sh stash | bench SITE_NAME [options] | verify SITE_NAME [options] | python ARGS" >&2
    exit 2
    ;;
esac
