#!/bin/bash
# One call on the lent GPU machine: CUDA build, the engine tests on the GPU, the benchmark.
# Here first (the tree plus .devpack must stay under 64 MiB):
#   npm install && npx --no node-llama-cpp source download --skipBuild
#   ../shared/device/pack.sh 'node_modules/@typescript' 'node_modules/typescript' \
#     'node_modules/@node-llama-cpp/linux-x64' 'node_modules/lightningcss*' 'node_modules/@types'
# Then: device run, carry [".devpack"], command `bash scripts/device-check.sh`, timeout_s 600.
# About 5-6 min of CUDA build leaves ~4 min for the rest; logs and results land in $OUT.
set -o pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
source .devpack/enter.sh
s=$SECONDS
npm run build:cuda > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "cuda build: $((SECONDS - s)) s"
s=$SECONDS
CML_TEST_BACKEND=cuda npx vitest run test/engine 2>&1 | tee "$OUT/test-gpu.log" | grep -E "✓|×|Tests|FAIL|Error" | tail -30
echo "gpu tests: $((SECONDS - s)) s"
s=$SECONDS
npm run --silent bench -- --shape 1b --type f16 --backend cuda --streams 1,8,32,64 --tokens 128 --runs 2 \
  --bandwidth 3000 --baselines llama-bench,batched-bench --out "$OUT/bench" --models-dir /tmp/bench-models 2>&1 | tail -40
echo "bench: $((SECONDS - s)) s"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
