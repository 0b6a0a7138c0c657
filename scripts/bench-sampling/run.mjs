#!/usr/bin/env node
// npm run bench:sampling -- [vocab] [tokens]: builds scripts/bench-sampling/main.cpp against the same
// sources and llama.cpp libraries as the CPU addon (build/bench-sampling), then runs it.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const llama = path.join(root, 'node_modules/node-llama-cpp/llama/llama.cpp');
const bins = path.join(root, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
const out = path.join(root, 'build/bench-sampling');
mkdirSync(path.dirname(out), { recursive: true });
execFileSync(
  'g++',
  [
    '-O3',
    '-std=c++17',
    `-I${root}/native`,
    `-I${llama}/include`,
    `-I${llama}/ggml/include`,
    path.join(root, 'scripts/bench-sampling/main.cpp'),
    path.join(root, 'native/sampling.cpp'),
    `-L${bins}`,
    '-l:libllama.v0.4.0.so',
    '-l:libggml.v0.4.0.so',
    '-l:libggml-base.so',
    `-Wl,-rpath,${bins}`,
    '-o',
    out,
  ],
  { stdio: 'inherit' },
);
execFileSync(out, process.argv.slice(2), { stdio: 'inherit' });
