// The short forms of `npm run fuzz` and `npm run soak`: the same harness, a real server process,
// fewer cases and seconds. The long runs' figures are in docs/serving.md.
import { describe, expect, it } from 'vitest';
import { runFuzz } from '../../scripts/robustness/fuzz.ts';
import { runSoak } from '../../scripts/robustness/soak.ts';

describe('robustness harness (short)', () => {
  it('fuzz: 600 random and extreme requests, 8 at once: no crash, no 5xx, greedy answers as alone', async () => {
    const r = await runFuzz({ cases: 600, concurrency: 8, seed: 7, slots: 4, threads: 1 });
    expect({
      crashes: r.crashes,
      serverErrors: r.serverErrors,
      connectionErrors: r.connectionErrors,
      mismatches: r.mismatches,
      busyAtEnd: r.busyAtEnd,
    }).toEqual({
      crashes: [],
      serverErrors: [],
      connectionErrors: 0,
      mismatches: [],
      busyAtEnd: 0,
    });
    expect(r.checked).toBeGreaterThan(50);
    expect(r.byStatus['400']).toBeGreaterThan(100); // the extreme values were refused, not served
  }, 120_000);

  it('soak: 16 clients for 8 s, a fifth of them leaving mid-request', async () => {
    const r = await runSoak({ clients: 16, seconds: 8, disconnect: 0.2, seed: 3, slots: 4, threads: 1 });
    expect({
      crashes: r.crashes,
      serverErrors: r.serverErrors,
      mismatches: r.mismatches,
      busyAtEnd: r.busyAtEnd,
    }).toEqual({ crashes: [], serverErrors: [], mismatches: [], busyAtEnd: 0 });
    expect(r.completed).toBeGreaterThan(100);
    expect(r.disconnected).toBeGreaterThan(10);
    // The closing SIGTERM: every stream in flight (most of them queued) ends with its done event.
    expect(r.drain).toMatchObject({ inFlight: 16, done: 16, cut: 0, exitCode: 0 });
  }, 120_000);
});
