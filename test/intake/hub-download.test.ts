// A base model named by a Hub id that is on no disk here: fetched from the Hub (a local stand-in
// speaking its protocol, test/cml/fake-hub.ts) into the HF cache, converted, and served.
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocateError, locateBaseModel } from '../../src/cml/locate.ts';
import { Engine } from '../../src/engine/index.ts';
import { startFakeHub, type FakeHub } from '../cml/fake-hub.ts';
import { modelDir, testBackend } from '../helpers.ts';

const commit = 'a'.repeat(40);
const saved = { ...process.env };
let hub: FakeHub;
let gated: FakeHub;

beforeAll(async () => {
  hub = await startFakeHub({ repo: 'tiny-org/remote-qa', dir: path.join(modelDir('tiny-qa'), 'base-hf'), commit });
  gated = await startFakeHub({
    repo: 'tiny-org/gated-qa',
    dir: path.join(modelDir('tiny-qa'), 'base-hf'),
    commit,
    token: 'hf_secret',
  });
});
afterAll(async () => {
  await hub.close();
  await gated.close();
});
afterEach(() => {
  for (const k of ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_TOKEN', 'HF_HUB_OFFLINE']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

function fresh(endpoint: string): { cache: string; hubCache: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cml-hub-'));
  process.env.HF_ENDPOINT = endpoint;
  process.env.HF_HUB_CACHE = path.join(dir, 'hub');
  return { cache: path.join(dir, 'cache'), hubCache: path.join(dir, 'hub') };
}

describe('a Hub id that is not on disk', () => {
  it('is fetched into the HF cache, converted and served; a second start fetches nothing', async () => {
    const { cache, hubCache } = fresh(hub.url);
    const progress: number[] = [];
    const located = await locateBaseModel(
      'tiny-org/remote-qa',
      path.join(cache, 'models'),
      cache,
      cache,
      (done, total) => progress.push(done / total),
    );
    expect(located.rule).toBe(`fetched from ${hub.url} into the Hugging Face cache, converted into the cache`);
    const snapshot = path.join(hubCache, 'models--tiny-org--remote-qa', 'snapshots', commit);
    expect(readdirSync(snapshot).sort()).toEqual([
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.model',
      'tokenizer_config.json',
    ]);
    expect(existsSync(path.join(hubCache, 'models--tiny-org--remote-qa', 'blobs'))).toBe(true);
    expect(progress.at(-1)).toBe(1);
    expect(hub.unexpected).toEqual([]);

    const engine = await Engine.load({ modelPath: located.path, backend: testBackend, threads: 1, contextSize: 256 });
    try {
      const r = await engine.generate('Question: What is the capital of Belithne?\nAnswer:', {
        greedy: true,
        maxTokens: 12,
      }).result;
      expect(r.text).toBe(' Vegri.');
    } finally {
      await engine.close();
    }
    const before = hub.requests.length;
    expect((await locateBaseModel('tiny-org/remote-qa', path.join(cache, 'models'), cache, cache)).rule).toBe(
      'a Hugging Face cache snapshot, reused from the cache',
    );
    expect(hub.requests.length).toBe(before);
  });

  it('a gated repo needs HF_TOKEN, and says so', async () => {
    const { cache } = fresh(gated.url);
    const err = await locateBaseModel('tiny-org/gated-qa', cache, cache, cache).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LocateError);
    expect((err as Error).message).toMatch(
      /fetching it failed: cannot list 'tiny-org\/gated-qa' on .*restricted.*\(a gated or private repo needs HF_TOKEN\)/,
    );
    process.env.HF_TOKEN = 'hf_secret';
    expect((await locateBaseModel('tiny-org/gated-qa', cache, cache, cache)).rule).toMatch(/^fetched from /);
    expect(gated.unexpected).toEqual([]);
  });

  it('HF_HUB_OFFLINE=1: nothing is fetched, and the error lists every place tried', async () => {
    const { cache } = fresh(hub.url);
    process.env.HF_HUB_OFFLINE = '1';
    const before = hub.requests.length;
    await expect(locateBaseModel('tiny-org/remote-qa', cache, cache, cache)).rejects.toThrow(
      /^base model 'tiny-org\/remote-qa' not found, and HF_HUB_OFFLINE=1 forbids fetching it from the Hub; tried: .*the Hugging Face cache .* \(no snapshot of tiny-org\/remote-qa\)/,
    );
    expect(hub.requests.length).toBe(before);
  });

  it('a missing relative .gguf path is never taken for a Hub id', async () => {
    const { cache } = fresh(hub.url);
    const before = hub.requests.length;
    await expect(locateBaseModel('models/missing.gguf', cache, cache, cache)).rejects.toThrow(
      /^base model 'models\/missing\.gguf' not found; tried: /,
    );
    expect(hub.requests.length).toBe(before);
  });

  it('a repo the Hub does not have, and an endpoint that does not answer', async () => {
    const { cache } = fresh(hub.url);
    await expect(locateBaseModel('tiny-org/nope', cache, cache, cache)).rejects.toThrow(
      /fetching it failed: cannot list 'tiny-org\/nope'/,
    );
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9'; // discard port: nothing listens
    await expect(locateBaseModel('tiny-org/remote-qa', cache, cache, cache)).rejects.toThrow(
      /fetching it failed: cannot list 'tiny-org\/remote-qa' on http:\/\/127\.0\.0\.1:9/,
    );
  });
});
