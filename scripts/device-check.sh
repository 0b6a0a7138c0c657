#!/bin/bash
# The GPU check on the lent machine: the CUDA build, the engine tests on the GPU, then the benchmark
# ("1b" F16 in full, then "8b" Q4_0 while time is left). Logs and results land in $OUT.
#
# Fast path: the CUDA build is made here and carried, in two calls ~30 s apart (the machine's warm
# window keeps the first call's files). .devpack (46 MiB) and the build (40 MiB) do not fit one
# call's 64 MiB beside the tree (16 MiB), and the build on the machine costs ~6 of its 15 minutes.
#   here:   npm install && npx --no node-llama-cpp source download --skipBuild
#           ../shared/device/pack.sh 'node_modules/@typescript' 'node_modules/typescript' \
#             'node_modules/@node-llama-cpp/linux-x64' 'node_modules/lightningcss*' 'node_modules/@types'
#           npm run build:cuda && bash scripts/device-check.sh pack   # writes .cudapack/
#   call 1: carry [".devpack"],  bash scripts/device-check.sh prep    # node, node_modules, copy rate
#   call 2: carry [".cudapack"], bash scripts/device-check.sh run     # tests and benchmarks, ≤ 600 s
# Slow path, one call with carry [".devpack"]: bash scripts/device-check.sh (builds there, ~6 min).
# `run` builds too when the carried build does not match this tree's native sources.
set -o pipefail
phase=${1:-all}
cd "$(dirname "$0")/.."

# What the CUDA build is made from: a carried build counts only for the same sources.
stamp() {
  { find native -type f | LC_ALL=C sort | xargs sha256sum
    sha256sum CMakeLists.txt scripts/build-cuda.mjs
    grep -m1 -A1 '"node_modules/node-llama-cpp"' package-lock.json
    echo "sm_${CMAKE_CUDA_ARCHITECTURES:-90}"; } | sha256sum | cut -c1-16
}

if [ "$phase" = pack ]; then # here, after npm run build:cuda
  [ -f build-cuda/bin/libggml-cuda.so ] || { echo "pack: run npm run build:cuda first (about an hour on 2 cores)" >&2; exit 1; }
  # Brings the build up to these sources (seconds when only native/ changed), so the stamp is true.
  # Linking the tools wants libcuda.so.1: a machine without a driver has the toolkit's stub.
  LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs:/usr/local/cuda/lib/stubs:${LD_LIBRARY_PATH:-} npm run --silent build:cuda > /dev/null || exit 1
  t=$(mktemp -d) && cp -a build-cuda/bin build-cuda/Release "$t"/
  # Symbols and debug info are a third of the size; the device needs neither.
  strip --strip-unneeded "$t"/bin/*.so.* "$t"/bin/llama-bench "$t"/bin/llama-batched-bench "$t"/bin/*-impl.so "$t"/Release/*.node
  mkdir -p .cudapack && tar -C "$t" -cf - bin Release | xz -T0 -9e > .cudapack/build-cuda.tar.xz && rm -rf "$t"
  stamp > .cudapack/stamp
  du -b .cudapack/* | awk '{printf "%8.1f MiB  %s\n", $1/1048576, $2}'
  exit 0
fi

OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
# A second call on the warm machine finds node and node_modules already unpacked by the first.
if [ "$phase" = run ] && command -v node > /dev/null && [ -d node_modules/vitest ]; then
  export PATH=/usr/local/cuda/bin:/opt/torch/.venv/bin:$PATH CUDACXX=/usr/local/cuda/bin/nvcc npm_config_nodedir=/usr CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
elif [ -f .devpack/enter.sh ]; then
  source .devpack/enter.sh
else
  echo "device-check: no node here and no .devpack: the machine is fresh; run 'prep' first, carrying .devpack" >&2
  exit 2
fi
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}  # cudart and cuBLAS for build-cuda/bin
start=$SECONDS
left() { echo $((570 - (SECONDS - start))); }

# The card's copy rate (bytes read + written per second), for the benchmark's bandwidth bound;
# kept outside the tree, where the second call finds it.
BW_FILE=/tmp/cml-copy-rate
measure_copy_rate() {
  PY=$( [ -x /opt/torch/.venv/bin/python3 ] && echo /opt/torch/.venv/bin/python3 || echo python3)
  $PY -c "
import torch, time
x = torch.empty(2**29, dtype=torch.float32, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.time()
for _ in range(20): y.copy_(x)
torch.cuda.synchronize(); print(round(2 * x.nbytes * 20 / (time.time() - t) / 1e9))" > $BW_FILE 2> "$OUT/copy-rate.log" || rm -f $BW_FILE
}
if [ "$phase" = prep ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  measure_copy_rate
  echo "copy rate: $(cat $BW_FILE 2> /dev/null || echo '? (see copy-rate.log)') GB/s"
  exit 0
fi

if [ -f .cudapack/build-cuda.tar.xz ] && [ "$(cat .cudapack/stamp)" = "$(stamp)" ]; then
  rm -rf build-cuda && mkdir -p build-cuda && tar -C build-cuda -xJf .cudapack/build-cuda.tar.xz
  echo "cuda build: carried (stamp $(stamp))"
elif [ "$phase" != run ] || [ ! -f build-cuda/Release/cml_llama.node ]; then
  [ -f .cudapack/stamp ] && echo "cuda build: the carried one is for other sources ($(cat .cudapack/stamp), this tree $(stamp)): building"
  s=$SECONDS
  npm run build:cuda > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "cuda build: $((SECONDS - s)) s"
fi
[ "$phase" = build ] && exit 0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
node -e "const a=require('./build-cuda/Release/cml_llama.node'); console.log(a.devices().map(d=>d.name+': '+d.description).join('; '))" 2>&1 | tee "$OUT/devices.txt"
[ -s $BW_FILE ] || measure_copy_rate
BW=$(cat $BW_FILE 2> /dev/null || echo 3000)
echo "copy rate: $BW GB/s"

s=$SECONDS
CML_TEST_BACKEND=cuda timeout $(( $(left) / 4 )) npx vitest run test/engine 2>&1 | tee "$OUT/test-gpu.log" | grep -E "✓|×|Tests|FAIL|Error" | tail -30
echo "gpu tests: $((SECONDS - s)) s"

bench() { # name, then bench flags
  local name=$1; shift
  s=$SECONDS
  timeout $(( $(left) - 10 )) npm run --silent bench -- --backend cuda --baselines llama-bench,batched-bench --bandwidth "$BW" \
    --out "$OUT/$name" --models-dir /tmp/bench-models "$@" > "$OUT/$name.log" 2>&1
  echo "bench $name: exit $?, $((SECONDS - s)) s"
  tail -30 "$OUT/$name.log"
}
bench 1b-f16 --shape 1b --type f16 --streams 1,4,8,16,32,64 --tokens 128 --runs 2
rm -f /tmp/bench-models/*1b*
[ "$(left)" -gt 150 ] && bench 8b-q4_0 --shape 8b --type q4_0 --streams 1,8,32 --tokens 128 --runs 2 --no-http
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
