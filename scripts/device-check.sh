#!/bin/bash
# The GPU check on the lent machine: the CUDA build, the engine tests on the GPU, then the benchmark
# ("1b" F16 in full, then "8b" Q4_0 while time is left). Logs and results land in $OUT.
#   bash scripts/device-check.sh          all of it in one call (the build takes ~6 of its 10 minutes)
#   bash scripts/device-check.sh build    the build alone; then, within the machine's ~30 s warm
#   bash scripts/device-check.sh run      window, the rest (the build dir is kept while it is warm)
# Here first (the tree plus .devpack must stay under 64 MiB: 16 + 46 MiB):
#   npm install && npx --no node-llama-cpp source download --skipBuild
#   ../shared/device/pack.sh 'node_modules/@typescript' 'node_modules/typescript' \
#     'node_modules/@node-llama-cpp/linux-x64' 'node_modules/lightningcss*' 'node_modules/@types'
# Then: device run, carry [".devpack"], timeout_s 600. (A CUDA build made here is ~40 MiB even
# xz-compressed, sm_90 only: it does not fit beside .devpack, so the machine builds its own.)
set -o pipefail
phase=${1:-all}
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
source .devpack/enter.sh
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}  # cudart and cuBLAS for build-cuda/bin
start=$SECONDS
left() { echo $((570 - (SECONDS - start))); }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
if [ "$phase" != run ] || [ ! -f build-cuda/Release/cml_llama.node ]; then
  s=$SECONDS
  npm run build:cuda > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "cuda build: $((SECONDS - s)) s"
fi
[ "$phase" = build ] && exit 0
node -e "const a=require('./build-cuda/Release/cml_llama.node'); console.log(a.devices().map(d=>d.name+': '+d.description).join('; '))" 2>&1 | tee "$OUT/devices.txt"

# The card's copy rate (bytes read + written per second), for the benchmark's bandwidth bound.
PY=$( [ -x /opt/torch/.venv/bin/python3 ] && echo /opt/torch/.venv/bin/python3 || echo python3)
BW=$($PY -c "
import torch, time
x = torch.empty(2**29, dtype=torch.float32, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.time()
for _ in range(20): y.copy_(x)
torch.cuda.synchronize(); print(round(2 * x.nbytes * 20 / (time.time() - t) / 1e9))" 2>/dev/null || echo 3000)
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
