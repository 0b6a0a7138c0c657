#!/usr/bin/env node
// npm run build:cuda — compiles llama.cpp (bundled with node-llama-cpp) with CUDA for this machine's
// GPU and links native/ against it into build-cuda/Release/cml_llama.node. The backend 'auto' then
// prefers it when an NVIDIA driver is present. Takes ~5 minutes on 16 cores for one architecture.
//   CMAKE_CUDA_ARCHITECTURES  GPU architectures (default 90: H100/H200)
//   CML_CUDA=OFF              build the same addon for CPU only (checks this path without a GPU)
//   CML_TOOLS=OFF             skip llama-bench / llama-batched-bench / llama-completion (the benchmark's baselines)
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cuda = (process.env.CML_CUDA ?? 'ON').toUpperCase() !== 'OFF';
const archs =
  process.env.CMAKE_CUDA_ARCHITECTURES ?? process.env.NODE_LLAMA_CPP_CMAKE_OPTION_CMAKE_CUDA_ARCHITECTURES ?? '90';

if (!existsSync(path.join(root, 'node_modules/node-llama-cpp/llama/llama.cpp/CMakeLists.txt'))) {
  console.error('build-cuda: llama.cpp sources missing; run npm install (or npm run build:native) first');
  process.exit(1);
}
// cmake-js would download Node headers; this machine's own are used instead (no network needed).
const env = { ...process.env };
if (!env.npm_config_nodedir && existsSync(path.join(path.dirname(process.execPath), '../include/node/node_api.h'))) {
  env.npm_config_nodedir = path.resolve(path.dirname(process.execPath), '..');
}
if (cuda && !env.CUDACXX && existsSync('/usr/local/cuda/bin/nvcc')) env.CUDACXX = '/usr/local/cuda/bin/nvcc';

const args = [
  path.join(root, 'node_modules/cmake-js/bin/cmake-js'),
  'compile',
  '-O',
  'build-cuda',
  '-T',
  'cml_llama',
  '-p',
  String(os.availableParallelism()),
  `--CDCML_CUDA=${cuda ? 'ON' : 'OFF'}`,
];
if (cuda) args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${archs}`);
console.log(`build-cuda: ${cuda ? `CUDA for sm_${archs}` : 'CPU only (CML_CUDA=OFF)'}`);
execFileSync(process.execPath, args, { cwd: root, env, stdio: 'inherit' });
// The benchmark's llama.cpp baselines, from the same tree and the same shared libraries (seconds
// once ggml is compiled); CML_TOOLS=OFF skips them.
if ((process.env.CML_TOOLS ?? 'ON').toUpperCase() !== 'OFF') {
  execFileSync(
    'cmake',
    [
      '--build',
      'build-cuda',
      '--config',
      'Release',
      '--target',
      'llama-bench',
      'llama-batched-bench',
      'llama-completion',
      '-j',
      String(os.availableParallelism()),
    ],
    { cwd: root, env, stdio: 'inherit' },
  );
}
console.log('build-cuda: built build-cuda/Release/cml_llama.node (llama.cpp in build-cuda/bin)');
