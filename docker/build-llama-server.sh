#!/usr/bin/env bash
# Build llama.cpp's native `llama-server` (the CPU engine) from the llama.cpp source vendored in the
# llama-cpp-python sdist on PyPI -- the only registry these machines reach.
#
#   docker/build-llama-server.sh OUT_DIR [LLAMA_CPP_PYTHON_VERSION]
#
# Writes OUT_DIR/llama-server. Skips everything when that binary already exists (the cache).
# Portable flags: a -DGGML_NATIVE=ON build dies with SIGILL on the CI/dev machines (their CPUs lack what the build machine has).
set -euo pipefail
out=${1:?usage: build-llama-server.sh OUT_DIR [VERSION]}
version=${2:-0.3.36}
jobs=${BAKEOFF_BUILD_JOBS:-$(nproc)}

if [ -x "$out/llama-server" ]; then
  echo "llama-server $version: cached at $out/llama-server"
  exit 0
fi
command -v cmake >/dev/null || { echo "build-llama-server: cmake is not installed" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "llama-server $version: fetching the llama-cpp-python sdist"
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
tar -C "$work" -xzf "$work"/llama_cpp_python-"$version".tar.gz
src="$work/llama_cpp_python-$version/vendor/llama.cpp"

echo "llama-server $version: building with $jobs jobs (about 7 minutes on 2 cores)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DBUILD_SHARED_LIBS=OFF >"$work/cmake-configure.log" 2>&1 \
  || { tail -n 40 "$work/cmake-configure.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j"$jobs" >"$work/cmake-build.log" 2>&1 \
  || { tail -n 40 "$work/cmake-build.log" >&2; exit 1; }

mkdir -p "$out"
# Copy then rename, so a killed build never leaves a half-written binary that looks cached.
cp "$work/build/bin/llama-server" "$out/llama-server.tmp"
mv "$out/llama-server.tmp" "$out/llama-server"
echo "llama-server $version: built $out/llama-server"
