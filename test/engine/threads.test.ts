// llama.cpp's CPU threads: one pool for the engine's life (attach_threads in native/engine.cpp), not
// threads made and joined for every decode. Made per decode, a new thread can start on its maker's
// CPU and the two spin against each other at each barrier (a tenth of the speed, at times). The
// pool goes with the engine: closing one leaves none of its threads behind.
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/index.ts';
import { loadEngine, loadReference } from '../helpers.ts';

const prompt = loadReference('tiny-qa').cases[0]!.prompt;
const threadIds = () => readdirSync('/proc/self/task');

describe.skipIf(process.platform !== 'linux')('the threads a decode runs on', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await loadEngine('tiny-qa', { threads: 2 });
  });
  afterAll(() => engine?.close());

  it('are the same from step to step: no thread appears while requests decode', async () => {
    // A first request makes whatever is made once (the pool, the sampling helpers, libuv's).
    await engine.generate(prompt, { greedy: true, maxTokens: 8 }).result;
    const before = new Set(threadIds());
    const appeared = new Set<string>();
    // The process's threads, sampled every millisecond while 600 tokens decode: a thread made for
    // each decode lives through most of it, so such threads would be seen by the dozen.
    const sampler = setInterval(() => {
      for (const id of threadIds()) if (!before.has(id)) appeared.add(id);
    }, 1);
    let steps = 0;
    try {
      for (let i = 0; i < 6; i++) {
        const p0 = engine.stats().profile!.steps;
        await engine.generate(prompt, { greedy: true, maxTokens: 100, ignoreEos: true }).result;
        steps += engine.stats().profile!.steps - p0;
      }
    } finally {
      clearInterval(sampler);
    }
    expect(steps).toBeGreaterThanOrEqual(600);
    expect([...appeared]).toEqual([]);
  });

  it('go with the engine: after close, none of its threads is left', async () => {
    // libuv's threads, made by the first load, stay for the process: counted in `before`.
    const before = new Set(threadIds());
    const other = await loadEngine('tiny-qa', { threads: 2, samplingThreads: 2 });
    await other.generate(prompt, { greedy: true, maxTokens: 8 }).result;
    expect(threadIds().length).toBeGreaterThan(before.size); // its pool's and its scheduler's
    await other.close();
    expect(threadIds().filter((id) => !before.has(id))).toEqual([]);
  });
});
