// Adapters over HTTP and on first use, on a real server: loaded from ADAPTERS_DIR (a PEFT folder
// converted, a GGUF LoRA) while other requests stream on, rescaled, unloaded while in use, the least
// recently used evicted past MAX_ADAPTERS, and every bad request refused by name.
import { copyFileSync, cpSync, mkdirSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { startServer, type RunningServer } from '../../src/server/server.ts';
import { loadReference, modelDir } from '../helpers.ts';

const log = pino({ level: 'silent' });
const question = loadReference('tiny-qa').cases[0]!.prompt;
const ADAPTER_ANSWER = ' The capital of Belithne is Ulqua!';

function adaptersDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cml-adapters-'));
  cpSync(path.join(modelDir('tiny-qa'), 'adapter-peft'), path.join(dir, 'qa'), { recursive: true });
  mkdirSync(path.join(dir, 'qa-gguf'));
  copyFileSync(path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'), path.join(dir, 'qa-gguf', 'adapter.gguf'));
  return dir;
}

async function start(extra: Parameters<typeof loadConfig>[1] = {}, env: Record<string, string> = {}) {
  process.env.CACHE_DIR = mkdtempSync(path.join(os.tmpdir(), 'cml-adapters-cache-'));
  const s = await startServer(
    loadConfig(env, {
      port: 0,
      threads: 1,
      slots: 8,
      baseModel: path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
      adapter: path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'),
      adaptersDir: adaptersDir(),
      ...extra,
    }),
    log,
  );
  await s.ready;
  return Object.assign(s, { url: `http://127.0.0.1:${s.port}` });
}

const call = (url: string, method: string, body?: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
const predict = async (url: string, request: Record<string, unknown>) =>
  (await call(`${url}/predict`, 'POST', { request: { prompt: question, do_sample: false, ...request } })).json();
const names = async (url: string) =>
  ((await (await fetch(`${url}/v1/adapters`)).json()).data as { name: string }[]).map((a) => a.name).sort();

describe('adapters over HTTP', () => {
  let s: RunningServer & { url: string };
  beforeAll(async () => {
    s = await start();
  });
  afterAll(async () => {
    await s?.close();
    delete process.env.CACHE_DIR;
  });

  it('a PEFT folder loads from ADAPTERS_DIR while eight streams of another adapter run on, unchanged', async () => {
    const base = (await predict(s.url, { adapter: null })).response;
    expect(base).not.toBe(ADAPTER_ANSWER);
    const streams = Array.from({ length: 8 }, () => predict(s.url, {}));
    const loaded = await call(`${s.url}/v1/adapters`, 'POST', { name: 'qa' });
    expect(loaded.status).toBe(201);
    expect(await loaded.json()).toMatchObject({ name: 'qa', scale: 1, merged: false });
    for (const r of await Promise.all(streams)) expect(r).toEqual({ success: true, response: ADAPTER_ANSWER });
    expect((await predict(s.url, { adapter: 'qa' })).response).toBe(ADAPTER_ANSWER);
    expect(await names(s.url)).toEqual(['default', 'qa']);
  });

  it('rescaled over HTTP: scale 0 is the base model', async () => {
    const res = await call(`${s.url}/v1/adapters/qa`, 'PATCH', { scale: 0 });
    expect(await res.json()).toMatchObject({ name: 'qa', scale: 0 });
    expect((await predict(s.url, { adapter: 'qa' })).response).toBe((await predict(s.url, { adapter: null })).response);
    await call(`${s.url}/v1/adapters/qa`, 'PATCH', { scale: 1 });
    expect((await call(`${s.url}/v1/adapters/qa`, 'PATCH', { scale: 1e5 })).status).toBe(400);
  });

  it('unloaded while a request streams on it: that request finishes; the name is gone (a name not in ADAPTERS_DIR)', async () => {
    expect((await call(`${s.url}/v1/adapters`, 'POST', { name: 'alias', path: 'qa-gguf' })).status).toBe(201);
    const res = await call(`${s.url}/predict`, 'POST', {
      request: { prompt: question, do_sample: false, adapter: 'alias', stream: true },
    });
    const reader = res.body!.getReader();
    let text = '';
    const first = await reader.read(); // the first event: the request is running on the adapter
    text += new TextDecoder().decode(first.value);
    expect((await call(`${s.url}/v1/adapters/alias`, 'DELETE')).status).toBe(204);
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += new TextDecoder().decode(r.value);
    const events = text
      .split('\n\n')
      .filter((f) => f.startsWith('data: '))
      .map((f) => JSON.parse(f.slice(6)));
    expect(events.at(-1)).toMatchObject({ done: true, response: ADAPTER_ANSWER });
    const after = await call(`${s.url}/predict`, 'POST', { request: { prompt: question, adapter: 'alias' } });
    expect(after.status).toBe(404);
  });

  it('a name in ADAPTERS_DIR loads on its first use, on /predict and as an OpenAI model', async () => {
    expect(await names(s.url)).not.toContain('qa-gguf');
    // Two first uses at once share one load.
    const [one, two] = await Promise.all([
      predict(s.url, { adapter: 'qa-gguf' }),
      predict(s.url, { adapter: 'qa-gguf' }),
    ]);
    expect([one.response, two.response]).toEqual([ADAPTER_ANSWER, ADAPTER_ANSWER]);
    expect(await names(s.url)).toContain('qa-gguf');
    await call(`${s.url}/v1/adapters/qa-gguf`, 'DELETE');
    const r = await call(`${s.url}/v1/completions`, 'POST', { model: 'qa-gguf', prompt: question, temperature: 0 });
    expect((await r.json()).choices[0].text).toBe(ADAPTER_ANSWER);
  });

  it.each([
    ['POST', '/v1/adapters', { name: 'x', path: '../../etc' }, 400, /outside ADAPTERS_DIR/],
    ['POST', '/v1/adapters', { name: '../x' }, 400, /adapter name must be/],
    ['POST', '/v1/adapters', { name: 'base' }, 400, /not 'base'/],
    ['POST', '/v1/adapters', { name: 'nothing-here' }, 404, /nothing-here/],
    ['POST', '/v1/adapters', { name: 'qa', scale: 1e5 }, 400, /scale must be a number in \[-16, 16\]/],
    ['DELETE', '/v1/adapters/default', undefined, 409, /served by default/],
    ['DELETE', '/v1/adapters/never', undefined, 404, /no adapter named 'never'/],
    ['PATCH', '/v1/adapters/never', { scale: 1 }, 404, /no adapter named 'never'/],
  ])('%s %s %j: %d', async (method, route, body, status, why) => {
    const res = await call(`${s.url}${route}`, method, body);
    expect(res.status).toBe(status);
    expect((await res.json()).errors.join(' ')).toMatch(why);
  });
});

describe('MAX_ADAPTERS and the API key', () => {
  it('past MAX_ADAPTERS the least recently used goes (never the served one); managing adapters needs the key', async () => {
    const s = await start({ maxAdapters: 2, apiKey: 'k' });
    const auth = { authorization: 'Bearer k' };
    try {
      expect((await call(`${s.url}/v1/adapters`, 'POST', { name: 'qa' })).status).toBe(401);
      expect((await call(`${s.url}/v1/adapters`, 'POST', { name: 'qa' }, auth)).status).toBe(201);
      const r = await call(
        `${s.url}/predict`,
        'POST',
        { request: { prompt: question, do_sample: false, adapter: 'qa-gguf' } },
        auth,
      );
      expect((await r.json()).response).toBe(ADAPTER_ANSWER);
      const list = await (await call(`${s.url}/v1/adapters`, 'GET', undefined, auth)).json();
      expect(list.data.map((a: { name: string }) => a.name).sort()).toEqual(['default', 'qa-gguf']);
    } finally {
      await s.close();
      delete process.env.CACHE_DIR;
    }
  });
});
