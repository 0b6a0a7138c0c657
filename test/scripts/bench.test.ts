// `npm run bench -- --quick` (the CPU smoke run) so the benchmark script cannot rot.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { cpuBudget } from '../../src/engine/cpus.ts';
import { steadyRate } from '../../scripts/bench/stats.ts';
import { root } from '../helpers.ts';

const run = promisify(execFile);

describe('benchmark --quick', () => {
  it('measures ours and node-llama-cpp on a synthetic model and writes the report', async () => {
    const out = mkdtempSync(path.join(os.tmpdir(), 'cml-bench-'));
    const { stdout } = await run(
      process.execPath,
      [path.join(root, 'node_modules/tsx/dist/cli.mjs'), 'scripts/bench/main.ts', '--quick', '--out', out],
      {
        cwd: root,
        timeout: 180_000,
      },
    );
    expect(stdout).toMatch(/one stream, engine \(tok\/s\)/);
    const r = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8'));
    expect(r.ours.engine.decodeTokS).toBeGreaterThan(0);
    expect(r.ours.http.decodeTokS).toBeGreaterThan(0);
    expect(r.ours.sweep.map((s: { streams: number }) => s.streams)).toEqual([1, 2, 4]);
    expect(r.ours.sweep.every((s: { aggregateTokS: number }) => s.aggregateTokS > 0)).toBe(true);
    expect(r.ours.lora.eight.mixed).toBeGreaterThan(0);
    // --quick: 1 and 2 adapters mixed at its largest stream count (4), each with base at 4 streams.
    expect(r.ours.lora.mixes.map((m: { streams: number; adapters: number }) => [m.streams, m.adapters])).toEqual([
      [4, 1],
      [4, 2],
    ]);
    for (const m of r.ours.lora.mixes) {
      expect(m.tokS).toBeGreaterThan(0);
      expect(m.turnsTokS).toBeGreaterThan(0);
      // Each row's own rounds: steps taken, and with the bank no adapter-set switch once warm.
      expect(m.steps).toBeGreaterThan(0);
      expect(m.switches).toBe(0);
    }
    expect(r.ours.lora.merged.oneStream.decodeTokS).toBeGreaterThan(0);
    expect(r.ours.lora.merged.baseOnMerged.decodeTokS).toBeGreaterThan(0);
    expect(r.ours.studio.aggregateTokS).toBeGreaterThan(0);
    expect(r.ours.sweep[0].step.decodeUs).toBeGreaterThan(0);
    expect(r.nodeLlamaCpp.oneStreamTokS ?? r.nodeLlamaCpp.skipped).toBeTruthy();
    for (const f of ['report.md', 'throughput.svg', 'ttft.svg', 'lora.svg'])
      expect(existsSync(path.join(out, f)), f).toBe(true);
    const report = readFileSync(path.join(out, 'report.md'), 'utf8');
    expect(report).toMatch(/## Concurrent streams/);
    // The CPUs the run had, beside the machine (--quick runs 1 thread).
    expect(r.cpus).toEqual(cpuBudget());
    expect(report).toContain(`; ${r.cpus.cores} cores`);
    expect(report).toMatch(/, threads 1\./);
  });
});

describe('steadyRate', () => {
  it('counts the tokens while every stream runs; streams that never overlap give the whole run', () => {
    // Two streams, a token every 100 ms; both run from 100 to 400 ms: tokens at 200, 300, 400 of
    // each (the window's start is excluded) over 0.3 s.
    expect(
      steadyRate([
        [0, 100, 200, 300, 400],
        [100, 200, 300, 400, 500],
      ]),
    ).toBeCloseTo(6 / 0.3, 9);
    // One set finished before the other started (adapters taking turns): 8 tokens, first to last 700 ms.
    expect(
      steadyRate([
        [0, 100, 200, 300],
        [400, 500, 600, 700],
      ]),
    ).toBeCloseTo(7 / 0.7, 9);
  });
});
