// Opening a predictor says which CPUs it may use, and warns when THREADS asks for more threads
// than that: llama.cpp's threads spin at every step and, past the CPUs (a container's limit
// included), stall each other.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { openPredictor } from '../../src/cml/open.ts';
import { cpuBudget } from '../../src/engine/index.ts';
import { modelDir, testBackend } from '../helpers.ts';

async function opened(threads: number) {
  const info: [Record<string, unknown>, string][] = [];
  const warn: [Record<string, unknown>, string][] = [];
  const p = await openPredictor(
    loadConfig(
      {},
      { baseModel: path.join(modelDir('tiny-qa'), 'base-f32.gguf'), threads, slots: 1, backend: testBackend },
    ),
    { info: (f, m) => info.push([f, m]), warn: (f, m) => warn.push([f, m]) },
  );
  await p.engine.close();
  return { info, warn };
}

describe('openPredictor and the CPUs', () => {
  const { cpus, cores, quota } = cpuBudget();

  it('logs the CPUs beside the backend, and no warning for threads within them', async () => {
    const { info, warn } = await opened(cpus);
    expect(info.find(([, m]) => m === 'backend')?.[0]).toMatchObject({ cpus, cores, cpuQuota: quota });
    expect(warn.filter(([, m]) => /threads on/.test(m))).toEqual([]);
  });

  it('warns by name when THREADS is more than the CPUs, and keeps it', async () => {
    const { info, warn } = await opened(cpus + 1);
    expect(info.find(([, m]) => m === 'model loaded')?.[0]).toMatchObject({ threads: cpus + 1 });
    const w = warn.find(([, m]) => /threads on/.test(m));
    expect(w?.[1]).toBe(
      `${cpus + 1} threads on ${cpus} CPU${cpus > 1 ? 's' : ''}: llama.cpp's threads spin at every step, and more of them than CPUs stall each other (a cgroup quota throttles them all)`,
    );
    expect(w?.[0]).toMatchObject({ threads: cpus + 1, cpus });
  });
});
