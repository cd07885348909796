#!/usr/bin/env bash
# Prepares what scripts/gpu_browser.sh needs on a GPU machine (Ubuntu 24.04, python3.12, NVIDIA's Vulkan driver,
# no package registry) to run `webbuild bench` in headless Chromium on the GPU beside the CUDA engine. Run it here
# (Debian 12 amd64, `chromium` installed, network to Debian and PyPI), from the repository root. It writes pieces
# of at most ~60 MiB into $GPU_CARRY (default .gpu/, git-ignored); each travels in its own `run` call, whose
# command starts with `bash scripts/gpu_browser.sh stash` (a carried folder is removed by the next call that does
# not name it, so stash copies it to /tmp at once):
#   chs/    Debian's chromium-headless-shell binary, xz -9 (~54 MiB; cached in $GPU_CARRY/dl)
#   tvm/    libtvm_compiler.so, xz (~59 MiB), from scripts/make_gpu_carry.sh          (unless WITH_CUDA=0)
#   rest/   Chromium's data files (chromium-common), two fonts, every library `ldd` lists but glibc's, the Vulkan/GL loader
#           debs, TVM's Python side and the cp312 wheels, the sites without their weight shards
#   w1/ w2/ ...  the sites' weight shards (one tar.xz, split), identical shards stored once; none with
#           WEIGHTS=random: gpu_browser.sh then fills the shards with seeded random values there
#           (scripts/random_weights.py; speed does not depend on the values, and 2 sites' weights take 3 calls)
# Usage: bash scripts/make_gpu_browser_carry.sh SITE [SITE...]
# Environment: GPU_CARRY (output folder), CHS_BINARY (a headless shell to use instead of downloading Debian's),
# XZ_LEVEL (default 9), PIECE_MIB (default 60), WITH_CUDA (default 1), WEIGHTS (real, the default, or random).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: make_gpu_browser_carry.sh SITE [SITE...]" >&2; exit 2; }
out="$(realpath -m "${GPU_CARRY:-.gpu}")"
piece_mib="${PIECE_MIB:-60}"
dl="$out/dl"
mkdir -p "$dl"
rm -rf "$out/chs" "$out/tvm" "$out/rest" "$out"/w[0-9]* "$out/stage"
mkdir -p "$out/chs" "$out/rest" "$out/stage/chr/lib" "$out/stage/chr/locales" "$out/stage/sites" "$out/rest/gl"

# --- the headless shell: Debian's package, the same version as the installed chromium-common
if [ -n "${CHS_BINARY:-}" ]; then
  chs="$CHS_BINARY"
  paks="$(dirname "$(realpath "$chs")")"
else
  version="$(dpkg-query -W -f '${Version}' chromium-common)"
  (cd "$dl" && { ls chromium-headless-shell_*.deb >/dev/null 2>&1 || apt-get download "chromium-headless-shell=$version"; })
  rm -rf "$dl/x" && mkdir "$dl/x" && dpkg -x "$dl"/chromium-headless-shell_*.deb "$dl/x"
  chs="$dl/x/usr/lib/chromium/chromium-headless-shell"
  paks="$dl/x/usr/lib/chromium"
fi
key="$(basename "$chs")-$(stat -c %s "$chs")-${XZ_LEVEL:-9}"
if [ ! -s "$dl/$key.xz" ]; then
  xz "-${XZ_LEVEL:-9}" -T1 -c "$chs" > "$dl/$key.xz.part" && mv "$dl/$key.xz.part" "$dl/$key.xz"
fi
cp "$dl/$key.xz" "$out/chs/chromium-headless-shell.xz"

# --- what it reads beside itself, and the libraries it links (the GPU machine lacks many; glibc it has)
cp "$paks"/*.pak "$out/stage/chr/" 2>/dev/null || true
for f in icudtl.dat v8_context_snapshot.bin snapshot_blob.bin libEGL.so libGLESv2.so libvulkan.so.1 \
         libvk_swiftshader.so vk_swiftshader_icd.json; do
  cp -L "/usr/lib/chromium/$f" "$out/stage/chr/"
done
cp /usr/lib/chromium/locales/en-US.pak "$out/stage/chr/locales/"
ldd "$chs" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) continue;; esac
  cp -L "$lib" "$out/stage/chr/lib/"
done
# Fonts: with none, Chromium dies at the first character it has to find a font for (SkFontMgr_FontConfigInterface:
# "Not implemented"); gpu_browser.sh points fontconfig at these.
(cd "$dl" && { ls fonts-dejavu-core_*.deb >/dev/null 2>&1 || apt-get download fonts-dejavu-core >/dev/null; })
rm -rf "$dl/fonts" && dpkg -x "$dl"/fonts-dejavu-core_*.deb "$dl/fonts"
mkdir -p "$out/stage/chr/fonts"
cp "$dl"/fonts/usr/share/fonts/truetype/dejavu/DejaVuSans{,Mono}.ttf "$out/stage/chr/fonts/"
tar -C "$out/stage" -czf "$out/rest/chromium.tar.gz" chr
(cd "$out/rest/gl" && for p in libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2; do
   ls "$dl/${p}_"*.deb >/dev/null 2>&1 || (cd "$dl" && apt-get download "$p" >/dev/null)
   cp "$dl/${p}_"*.deb .
 done)

# --- TVM and the wheels for the CUDA engine (make_gpu_carry.sh's pins); the compiler library travels alone
if [ "${WITH_CUDA:-1}" = 1 ]; then
  CARRY="$out/stage/cuda" bash scripts/make_gpu_carry.sh "$1" >/dev/null
  mkdir -p "$out/tvm"
  mv "$out/stage/cuda/a/libtvm_compiler.so.xz" "$out/tvm/"
  mv "$out/stage/cuda/b/tvm_rest.tar.xz" "$out/rest/"
  tar -C "$out/stage/cuda/b" -cf "$out/rest/wheels.tar" whl
fi

# --- the sites: small files in rest/, weight shards in w1/, w2/, ... Identical shards (of several sites, or the
# repeating blocks of scripts/make_bench_model.py's weights) are stored once, as hard links tar keeps as links.
declare -A first_copy=()
for site in "$@"; do
  cp -a "$site" "$out/stage/sites/$(basename "$(realpath "$site")")"
done
while read -r digest shard; do
  if [ -n "${first_copy[$digest]:-}" ]; then ln -f "${first_copy[$digest]}" "$shard"; else first_copy[$digest]="$shard"; fi
done < <(find "$out/stage/sites" -name 'params_shard_*' -print0 | sort -z | xargs -0 -r sha256sum)
tar -C "$out/stage" -czf "$out/rest/sites.tar.gz" --exclude='params_shard_*' sites
if [ "${WEIGHTS:-real}" = real ]; then
  (cd "$out/stage" && find sites -name 'params_shard_*' -print0 | sort -z | tar --null -T - -cf - | xz -1 -T2 > shards.tar.xz)
  split -b "${piece_mib}M" -d -a 2 "$out/stage/shards.tar.xz" "$out/stage/shards.part"
  n=0
  for part in "$out"/stage/shards.part*; do
    n=$((n + 1))
    mkdir -p "$out/w$n" && mv "$part" "$out/w$n/"
  done
fi
rm -rf "$out/stage"
du -sh "$out"/*/ | grep -v '/dl/$'
