// Builds and runs the C++ tables (doctest, from Debian's doctest-dev): the sampling rules against
// native/sampling.cpp and the CPU llama.cpp libraries (as scripts/bench-sampling does), the
// scheduler's policies against native/scheduling_policy.cpp alone, the adapter bank's gathered
// kernel (each of its instruction sets) against a double-precision reference. CI installs doctest (.ci/run)
// and requires these; elsewhere they are skipped when it is missing.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from '../helpers.ts';

const doctest = '/usr/include/doctest/doctest.h';
const required = Boolean(process.env.CI);
if (!existsSync(doctest) && !required)
  console.warn('tables.test.ts: no doctest (apt-get install doctest-dev): skipped');

const llama = path.join(root, 'node_modules/node-llama-cpp/llama/llama.cpp');
const bins = path.join(root, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
const llamaFlags = [
  `-I${llama}/include`,
  `-I${llama}/ggml/include`,
  `-L${bins}`,
  '-l:libllama.v0.4.0.so',
  '-l:libggml.v0.4.0.so',
  '-l:libggml-base.so',
  `-Wl,-rpath,${bins}`,
];

/** Compiles the table with its sources, runs it, and returns doctest's report (exit status aside). */
function runTable(name: string, sources: string[], extra: string[] = []): string {
  if (!existsSync(doctest))
    throw new Error('CI needs doctest for the C++ tables: .ci/run installs it (apt-get install doctest-dev)');
  const out = path.join(root, 'build/test', name);
  mkdirSync(path.dirname(out), { recursive: true });
  const files = [`test/native/${name}.cpp`, ...sources].map((f) => path.join(root, f));
  execFileSync('g++', [
    '-O1',
    '-std=c++17',
    '-Wall',
    '-Wextra',
    '-Werror',
    `-I${root}/native`,
    ...files,
    ...extra,
    '-o',
    out,
  ]);
  try {
    return execFileSync(out, ['--no-colors'], { encoding: 'utf8' });
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? e);
  }
}

/** The summary counts, and every failed check's lines, so a failure names its rule. */
function summary(report: string) {
  const cases = /test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed/.exec(report);
  const checks = /assertions:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed/.exec(report);
  return {
    cases: cases ? Number(cases[1]) : -1,
    failedCases: cases ? Number(cases[3]) : -1,
    failedChecks: checks ? Number(checks[3]) : -1,
    failures: report.split('\n').filter((l) => /ERROR|FAILED|values:|logged:/.test(l)),
  };
}

describe.skipIf(!existsSync(doctest) && !required)('C++ tables (doctest)', () => {
  it('sampling: every rule gives the token worked out by hand', () => {
    const s = summary(runTable('sampling_table', ['native/sampling.cpp'], llamaFlags));
    expect(s.failures).toEqual([]);
    expect(s).toMatchObject({ cases: 3, failedCases: 0, failedChecks: 0 });
  }, 60_000);

  it('gathered kernel: AVX2 and portable loops against a double-precision reference', () => {
    const s = summary(runTable('gathered_table', ['native/gathered_lora.cpp'], llamaFlags));
    expect(s.failures).toEqual([]);
    expect(s).toMatchObject({ cases: 2, failedCases: 0, failedChecks: 0 });
  }, 60_000);

  it('scheduling: admission, slot choice, turns and step plans as tabled', () => {
    const s = summary(runTable('scheduling_table', ['native/scheduling_policy.cpp']));
    expect(s.failures).toEqual([]);
    expect(s).toMatchObject({ cases: 16, failedCases: 0, failedChecks: 0 });
  }, 60_000);
});
