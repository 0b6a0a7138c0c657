// Builds test/native/sampling_table.cpp against native/sampling.cpp and the CPU llama.cpp libraries
// (as scripts/bench-sampling does) and runs its exact tables.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../helpers.ts';

describe('sampling, exact tables (C++)', () => {
  it('every rule gives the token worked out by hand', () => {
    const llama = path.join(root, 'node_modules/node-llama-cpp/llama/llama.cpp');
    const bins = path.join(root, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
    const out = path.join(root, 'build/test/sampling_table');
    mkdirSync(path.dirname(out), { recursive: true });
    execFileSync('g++', [
      '-O1', '-std=c++17', '-Wall', '-Wextra', `-I${root}/native`, `-I${llama}/include`, `-I${llama}/ggml/include`,
      path.join(root, 'test/native/sampling_table.cpp'), path.join(root, 'native/sampling.cpp'),
      `-L${bins}`, '-l:libllama.v0.4.0.so', '-l:libggml.v0.4.0.so', '-l:libggml-base.so', `-Wl,-rpath,${bins}`, '-o', out,
    ]);
    let output = '';
    try {
      output = execFileSync(out, { encoding: 'utf8' });
    } catch (e) {
      output = String((e as { stdout?: string }).stdout ?? e);
    }
    expect(output.split('\n').filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(output).toMatch(/^19 passed, 0 failed$/m);
  }, 60_000);
});
