// What operators and browsers expect of an HTTP service: an X-Request-Id echoed, CORS when asked
// for (and not otherwise), tokenize/detokenize in llama-server's shapes, LOG_LEVEL checked.
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { startServer, type RunningServer } from '../../src/server/server.ts';
import { loadReference, modelDir } from '../helpers.ts';

const log = pino({ level: 'silent' });
const c0 = loadReference('tiny-qa').cases[0]!;

async function start(extra: Parameters<typeof loadConfig>[1] = {}) {
  const s = await startServer(
    loadConfig(
      {},
      {
        port: 0,
        threads: 1,
        slots: 1,
        baseModel: path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
        adapter: null,
        ...extra,
      },
    ),
    log,
  );
  await s.ready;
  return Object.assign(s, { url: `http://127.0.0.1:${s.port}` });
}

describe('request ids, tokenize and detokenize', () => {
  let s: RunningServer & { url: string };
  beforeAll(async () => {
    s = await start();
  });
  afterAll(() => s?.close());

  it('echoes a sane X-Request-Id, and gives one when there is none or it is not sane', async () => {
    expect(
      (await fetch(`${s.url}/health`, { headers: { 'x-request-id': 'abc-123' } })).headers.get('x-request-id'),
    ).toBe('abc-123');
    const mine = (await fetch(`${s.url}/health`)).headers.get('x-request-id');
    expect(mine).toMatch(/^[0-9a-f-]{36}$/);
    const bad = (await fetch(`${s.url}/health`, { headers: { 'x-request-id': 'x'.repeat(200) } })).headers.get(
      'x-request-id',
    );
    expect(bad).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('tokenize gives the prompt ids transformers gave; detokenize reads them back', async () => {
    const post = (route: string, body: unknown) =>
      fetch(`${s.url}${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const t = await (await post('/tokenize', { content: c0.prompt })).json();
    expect(t.tokens).toEqual(c0.prompt_ids);
    const plain = await (await post('/tokenize', { content: c0.prompt, add_special: false })).json();
    expect(plain.tokens).toEqual(c0.prompt_ids.slice(1));
    expect(await (await post('/detokenize', { tokens: plain.tokens })).json()).toEqual({ content: c0.prompt });
    expect((await post('/tokenize', { content: 1 })).status).toBe(400);
    expect((await post('/detokenize', { tokens: [1e9] })).status).toBe(400);
  });

  it('no CORS headers unless origins are configured', async () => {
    const r = await fetch(`${s.url}/health`, { headers: { origin: 'http://a.example' } });
    expect(r.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('CORS_ORIGINS', () => {
  it('allows the configured origins (preflight before the API key), not others', async () => {
    const s = await start({ corsOrigins: ['http://a.example'], apiKey: 'k' });
    try {
      const preflight = await fetch(`${s.url}/v1/completions`, {
        method: 'OPTIONS',
        headers: {
          origin: 'http://a.example',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization',
        },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get('access-control-allow-origin')).toBe('http://a.example');
      expect(preflight.headers.get('access-control-allow-headers')).toMatch(/authorization/);
      const other = await fetch(`${s.url}/health`, { headers: { origin: 'http://b.example' } });
      expect(other.headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await s.close();
    }
  });

  it('CORS_ORIGINS=* allows any origin', async () => {
    const s = await start({ corsOrigins: ['*'] });
    try {
      const r = await fetch(`${s.url}/health`, { headers: { origin: 'http://anywhere.example' } });
      expect(r.headers.get('access-control-allow-origin')).toBe('http://anywhere.example');
    } finally {
      await s.close();
    }
  });

  it('CORS_ORIGINS and LOG_LEVEL from the environment', () => {
    expect(loadConfig({ CORS_ORIGINS: 'http://a.example, http://b.example' }).corsOrigins).toEqual([
      'http://a.example',
      'http://b.example',
    ]);
    expect(loadConfig({}).corsOrigins).toEqual([]);
    expect(loadConfig({ LOG_LEVEL: 'debug' }).logLevel).toBe('debug');
    expect(() => loadConfig({ LOG_LEVEL: 'loud' })).toThrow(
      "LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got 'loud'",
    );
  });
});
