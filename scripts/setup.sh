#!/usr/bin/env bash
# Installs everything dsforge needs on Debian 12, selects OpenBLAS and verifies it.
# Idempotent: a second run installs nothing and re-checks the BLAS in a few seconds.
set -euo pipefail

# What the library, the CLI and `make demo` need.
PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev libgloo-dev libopenblas0-openmp libopenblas-openmp-dev
  nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libicu-dev libpcre2-dev
  libsqlite3-dev          # hyperparameter-search studies
  libeigen3-dev           # the Gaussian-process sampler
  libcpp-httplib-dev      # dsforge serve
  wordnet-base            # the built-in default corpus (glosses)
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev  # `dsforge image`: decoding, standardisation,
  libopencv-features2d-dev libopencv-objdetect-dev                  # augmentation, SIFT and HOG
  zlib1g-dev              # MNIST's gzipped IDX files
  libsndfile1-dev libfftw3-dev  # `dsforge audio`: decoding WAV/FLAC/OGG, the FFTs of its features
)
# What `make test` and the benchmarks add (`setup.sh --demo` leaves them out).
TEST_PACKAGES=(
  libgtest-dev
  python3-torch           # reference implementations in tests and benchmarks only; dsforge never needs Python
  chromium                # headless browser that tests the HTML run report renders
  iproute2                # `ip netns`: the two-host distributed test runs over a veth pair
  python3-optuna          # bench_search's reference sampler
  python3-gensim          # bench_embed's reference word2vec
  sentencepiece           # bench_tokenizer's reference (spm_train, spm_encode)
  python3-torchaudio      # audio features' reference (tests and bench_audio)
  espeak-ng sox           # the synthetic spoken-words set (`dsforge audio synth`; `make demo` does not need it)
)
if [ "${1:-}" != "--demo" ]; then PACKAGES+=("${TEST_PACKAGES[@]}"); fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$HERE/build}"
MIN_GFLOPS="${DSFORGE_MIN_GFLOPS:-15}"

say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root or install sudo (apt-get needs root)"
  SUDO="sudo"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "all ${#PACKAGES[@]} packages present"
fi

# Debian ships the reference BLAS as well; libtorch's matmul goes through libblas.so.3, so the
# alternative must point at OpenBLAS (about 30x faster here).
arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
for lib in libblas.so.3 liblapack.so.3; do
  target="/usr/lib/$arch/openblas-openmp/$lib"
  [ -e "$target" ] || die "$target is missing although libopenblas0-openmp is installed"
  current="$(readlink -f "/usr/lib/$arch/$lib" || true)"
  if [ "$current" != "$(readlink -f "$target")" ]; then
    say "selecting OpenBLAS for $lib (was: ${current:-none})"
    $SUDO update-alternatives --set "$lib-$arch" "$target"
  fi
done

# Measure a float32 matrix product through libtorch: the only check that proves what is really used.
mkdir -p "$BUILD"
check="$BUILD/blas_check"
if [ ! -x "$check" ] || [ "$HERE/scripts/blas_check.cpp" -nt "$check" ]; then
  say "compiling the BLAS check (once)"
  g++ -O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 "$HERE/scripts/blas_check.cpp" -o "$check" \
      -ltorch -ltorch_cpu -lc10 || die "could not compile scripts/blas_check.cpp against libtorch"
fi
gflops="$("$check")" || die "BLAS check failed to run"
say "float32 matmul through libtorch: $gflops GFLOP/s (OpenBLAS expected; reference BLAS gives ~3)"
awk -v g="$gflops" -v m="$MIN_GFLOPS" 'BEGIN { exit !(g >= m) }' || die \
  "matmul runs at $gflops GFLOP/s, below $MIN_GFLOPS: a reference BLAS is in use. Check 'update-alternatives --display libblas.so.3-$arch' and that libopenblas0-openmp is installed."
# Test-only npm packages, pinned, under BUILD/node: node-llama-cpp (the prebuilt binaries of llama.cpp,
# nothing compiled) for the GGUF export tests and the decode comparison, and the official `openai`
# client for the server tests. The tests that need them skip, saying why, when node or a package is missing.
NPM_PACKAGES=(node-llama-cpp@3.21.1 openai@4.95.0)
if [ "${1:-}" != "--demo" ]; then
  missing_npm=()
  for spec in "${NPM_PACKAGES[@]}"; do
    name="${spec%@*}" version="${spec##*@}"
    pj="$BUILD/node/node_modules/$name/package.json"
    [ -f "$pj" ] && grep -q "\"version\": \"$version\"" "$pj" || missing_npm+=("$spec")
  done
  if [ ${#missing_npm[@]} -eq 0 ]; then
    say "npm test packages present: ${NPM_PACKAGES[*]}"
  elif command -v npm >/dev/null && command -v node >/dev/null; then
    say "installing npm test packages under $BUILD/node: ${missing_npm[*]}"
    mkdir -p "$BUILD/node"
    timeout 900 npm install --prefix "$BUILD/node" --save-exact --ignore-scripts --no-audit --no-fund --loglevel=error "${missing_npm[@]}" ||
      say "warning: npm could not install ${missing_npm[*]}; the tests that need them will skip"
  else
    say "warning: node/npm not found; the llama.cpp and OpenAI-client tests will skip"
  fi
fi
say "ok"
