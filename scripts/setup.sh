#!/usr/bin/env bash
# Installs everything webbuild needs on a Debian 12 machine; idempotent and quick when all is present.
#   system: emscripten (links model libraries), chromium (browser checks), mesa vulkan (Deno/lavapipe f16 checks)
#   python: .venv with webbuild and its test extras
#   npm:    web_runtime/node_modules (TVM JS runtime, tokenizers, jinja) and tests/webllm/node_modules (WebLLM,
#           for the interop test), then `npm run build:site`:
#           web_runtime/dist/runtime/, the browser runtime every site copies (webbuild/build/data/runtime)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need_apt=()
command -v emcc >/dev/null 2>&1 || need_apt+=(emscripten)
[ -x /usr/lib/chromium/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "* apt: installing ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

py_stamp="$(stamp_of pyproject.toml)"
if [ ! -f .venv/.webbuild-stamp ] || [ "$(cat .venv/.webbuild-stamp)" != "$py_stamp" ]; then
  echo "* python: creating .venv and installing webbuild[test]"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip uninstall -q -y webbuild 2>/dev/null || true  # the distribution's name before 0.2.0
  .venv/bin/pip install -q -e ".[test]"
  echo "$py_stamp" > .venv/.webbuild-stamp
fi

# tests/webllm: WebLLM (npm), which the WebLLM interop test serves beside a tiny site.
for pkg in web_runtime tests/webllm; do
  npm_stamp="$(stamp_of "$pkg/package.json" "$pkg/package-lock.json")"
  if [ ! -f "$pkg/node_modules/.webbuild-stamp" ] || [ "$(cat "$pkg/node_modules/.webbuild-stamp")" != "$npm_stamp" ]; then
    echo "* npm: installing $pkg dependencies"
    (cd "$pkg" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$npm_stamp" > "$pkg/node_modules/.webbuild-stamp"
  fi
done

# Rebuilt when its inputs change: the runtime's sources, its build script, its dependencies.
runtime_stamp="$(stamp_of web_runtime/package.json web_runtime/package-lock.json \
  $(find web_runtime/src web_runtime/scripts -type f | LC_ALL=C sort))"
if [ ! -f web_runtime/dist/.webbuild-stamp ] || [ "$(cat web_runtime/dist/.webbuild-stamp)" != "$runtime_stamp" ]; then
  echo "* npm: building the browser runtime (web_runtime/dist/runtime)"
  (cd web_runtime && npm run --silent build:site)
  echo "$runtime_stamp" > web_runtime/dist/.webbuild-stamp
fi
echo "* setup done ($(.venv/bin/python -c 'import tvm; print("tvm", tvm.__version__)'), emcc $(emcc --version 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1))"
