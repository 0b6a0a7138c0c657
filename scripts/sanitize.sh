#!/usr/bin/env bash
# The engine, server and robustness tests against an AddressSanitizer + UBSan build of native/
# (build/asan/cml_llama.node, the CPU variant), swapped in through CML_ADDON. About 5 minutes on
# 2 cores: not part of npm test; run it after touching native/.
#   bash scripts/sanitize.sh [vitest filters...]
set -euo pipefail
cd "$(dirname "$0")/.."
llama=node_modules/node-llama-cpp/llama/llama.cpp
bins="$PWD/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
mkdir -p build/asan
if [[ ! build/asan/cml_llama.node -nt native || -n "$(find native -newer build/asan/cml_llama.node)" ]]; then
  echo "sanitize: building build/asan/cml_llama.node"
  g++ -std=c++17 -O1 -g -Wall -Wextra -Wno-unused-parameter -Werror -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -fPIC -shared \
    -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -I"$(node -p 'path.dirname(process.execPath)')/../include/node" \
    -I"$(node -p "require('node-addon-api').include_dir")" -I"$llama/include" -I"$llama/ggml/include" -I"$llama/src" native/*.cpp \
    -L"$bins" -l:libllama.v0.4.0.so -l:libggml.v0.4.0.so -l:libggml-base.so -Wl,-rpath,"$bins" -o build/asan/cml_llama.node
fi
# Node itself is not instrumented: the runtimes are preloaded; leaks at exit are V8's, not checked.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 CML_ADDON=build/asan/cml_llama.node
# Not the playground test: Chromium does not start with the sanitizer runtimes preloaded.
if [[ $# -eq 0 ]]; then
  set -- test/engine test/server/server.test.ts test/server/hardening.test.ts test/server/drain.test.ts test/scripts/robustness.test.ts
fi
npx vitest run "$@"
