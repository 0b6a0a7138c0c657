// What a careless or hostile client, or a bad config, must not do to the server: crash it, spoil
// another request, hold its sockets, mint metric series, or pass a config that breaks every request.
import { mkdtempSync, readdirSync, statSync, truncateSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, type Overrides } from '../../src/cml/config.ts';
import { startServer, type RunningServer } from '../../src/server/server.ts';
import { withCacheDir, writePoisonAdapter } from '../helpers.ts';

const log = pino({ level: 'silent' });
const question = 'Question: What is the capital of Belithne?\nAnswer:';
const qa = 'Question: What is the capital of Belithne?\nAnswer: The capital of Belithne is Ulqua! ';
const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-hardening-'));

type Started = RunningServer & { url: string };
async function start(o: Overrides = {}): Promise<Started> {
  const s = await startServer(loadConfig({}, { port: 0, threads: 1, slots: 2, ...o }), log);
  await s.ready;
  return Object.assign(s, { url: `http://127.0.0.1:${s.port}` });
}
const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
const predict = async (url: string, request: Record<string, unknown>) => {
  const res = await post(`${url}/predict`, { request });
  return { status: res.status, body: (await res.json()) as { success: boolean; response?: string; errors?: string[] } };
};

describe('values past their bounds', () => {
  let s: Started;
  beforeAll(async () => {
    s = await start();
  });
  afterAll(() => s?.close());

  it.each([
    [{ adapter_scale: 1e5 }, 'adapter_scale must be a number in [-16, 16], got 100000'],
    [{ temperature: 1e-45 }, 'temperature must be 0 or a number in [1e-06, 100], got 1e-45'],
    [{ temperature: 1e39 }, 'temperature must be 0 or a number in [1e-06, 100], got 1e+39'],
    [{ max_new_tokens: 0 }, 'max_new_tokens must be an integer in [1, 16777216], got 0'],
    [{ stream: 'yes' }, 'stream must be true or false, got "yes"'],
    [{ stream: 2 }, 'stream must be true or false, got 2'],
  ])('%j is a 400 that says so under its public name', async (params, message) => {
    expect(await predict(s.url, { prompt: question, ...params })).toEqual({
      status: 400,
      body: { success: false, errors: [message] },
    });
  });

  it('the OpenAI route names its own parameters', async () => {
    const res = await post(`${s.url}/v1/completions`, { prompt: question, logit_bias: { 3: 1e39 } });
    expect(res.status).toBe(400);
    expect((await res.json()).errors).toEqual(["logit_bias['3'] must be a number in [-100, 100], got 1e+39"]);
    const stream = await post(`${s.url}/v1/completions`, { prompt: question, stream: 'yes' });
    expect((await stream.json()).errors).toEqual(['stream must be true or false']);
  });

  it('a 4.8 MB prompt is refused by its size, before it is tokenized', async () => {
    const r = await predict(s.url, { prompt: 'x'.repeat(4_800_000) });
    expect(r.status).toBe(400);
    expect(r.body.errors![0]).toMatch(
      /^prompt \(4800000 bytes: at least \d+ tokens\) \+ max new tokens \(60\) exceeds the context of 256 tokens per slot$/,
    );
  });

  it('and the server still answers', async () => {
    expect(await predict(s.url, { prompt: question, do_sample: false })).toEqual({
      status: 200,
      body: { success: true, response: ' The capital of Belithne is Ulqua!' },
    });
  });
});

describe('a config that would break every request stops the start, by name', () => {
  it.each([
    ['{"temperature": 1e39}', 'temperature must be 0 or a number in [1e-06, 100], got 1e+39'],
    ['{"adapter_scale": 1e6}', 'adapter_scale must be a number in [-16, 16], got 1000000'],
    [
      '{"max_new_tokens": 5000}',
      'prompt (1 tokens) + max new tokens (5000) exceeds the context of 256 tokens per slot',
    ],
    ['{"adapter": "nope"}', "no adapter named 'nope' is loaded"],
  ])('%s', async (genConfigString, message) => {
    const s = await startServer(loadConfig({}, { port: 0, threads: 1, slots: 1, genConfigString }), log);
    const err = await s.ready.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(
      `generation config (FINE_TUNING_STUDIO_GEN_CONFIG_STRING) cannot serve a request: ${message}`,
    );
    expect(await (await fetch(`http://127.0.0.1:${s.port}/health`)).json()).toMatchObject({ status: 'failed' });
    await s.close();
  });

  it('a port in use says so', async () => {
    const s = await start({ slots: 1 });
    try {
      await expect(startServer(loadConfig({}, { port: s.port, threads: 1 }), log)).rejects.toThrow(
        `port ${s.port} on 127.0.0.1 is already in use (EADDRINUSE): stop what holds it, or set PORT / --port`,
      );
    } finally {
      await s.close();
    }
  });
});

describe('a request whose numbers overflow, with one slot (a CML replica)', () => {
  // The served adapter is a real adapter file with its lora_b scaled by 1e20 (finite weights whose
  // products overflow float32), served unmerged; adapter: null requests are the base model.
  let s: Started;
  beforeAll(async () => {
    const poison = await writePoisonAdapter(path.join(tmp, 'poison.gguf'));
    s = await start({ slots: 1, adapter: poison, mergeAdapter: false });
  });
  afterAll(() => s?.close());

  it('is a 422 for it alone; the next request in the slot answers as it does alone', async () => {
    const base = { prompt: `${qa.repeat(2)}${question}`, do_sample: false, adapter: null, max_new_tokens: 16 };
    const alone = await predict(s.url, base);
    expect(alone.status).toBe(200);
    const bad = await predict(s.url, { prompt: `${qa.repeat(6)}${question}`, do_sample: true, max_new_tokens: 16 });
    expect(bad.status).toBe(422);
    expect(bad.body.errors![0]).toMatch(/became NaN or infinite/);
    expect(await predict(s.url, base)).toEqual(alone);
    expect(await predict(s.url, { ...base, prompt: question })).toEqual({
      status: 200,
      body: { success: true, response: ' Vegri.' },
    });
  });
});

describe('the API key, and clients that misbehave', () => {
  let s: Started;
  beforeAll(async () => {
    s = await start({ slots: 1, maxQueue: 0, apiKey: 'sesame' });
  });
  afterAll(() => s?.close());
  const auth = { authorization: 'Bearer sesame' };

  it('401 comes before the body is read, with WWW-Authenticate; accessKey is not the key', async () => {
    const res = await post(`${s.url}/predict`, '{"request": ', {}); // malformed: never parsed
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="cml-lora-serve"');
    expect((await res.json()).errors).toEqual(['missing or wrong API key (Authorization: Bearer <key>)']);
    // CML's accessKey selects the model at CML's gateway; here it neither authenticates nor hurts.
    expect(
      (await post(`${s.url}/predict?accessKey=sesame`, { accessKey: 'sesame', request: { prompt: 'x' } })).status,
    ).toBe(401);
    const ok = await post(
      `${s.url}/predict?accessKey=abc`,
      { accessKey: 'abc', request: { prompt: question, do_sample: false } },
      auth,
    );
    expect((await ok.json()).response).toBe(' The capital of Belithne is Ulqua!');
  });

  it('20 000 distinct paths add no metric series; a client that leaves counts as 499', async () => {
    const before = (await (await fetch(`${s.url}/metrics`)).text())
      .split('\n')
      .filter((l) => l.startsWith('cml_requests_total{')).length;
    for (let i = 0; i < 200; i++)
      await Promise.all(
        Array.from({ length: 100 }, (_, j) => fetch(`${s.url}/v1/x-${i}-${j}`).then((r) => r.arrayBuffer())),
      );
    const res = await post(
      `${s.url}/predict`,
      { request: { prompt: question, max_new_tokens: 200, min_new_tokens: 200, stream: true } },
      auth,
    );
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    let metrics = '';
    for (let i = 0; i < 50 && !metrics.includes('status="499"'); i++) {
      await new Promise((r) => setTimeout(r, 50));
      metrics = await (await fetch(`${s.url}/metrics`)).text();
    }
    const series = metrics.split('\n').filter((l) => l.startsWith('cml_requests_total{'));
    expect(series.length).toBeLessThanOrEqual(before + 3); // other/401, /metrics/200 and /predict/499 at most
    expect(metrics).not.toMatch(/x-\d+-\d+/);
    expect(metrics).toMatch(/cml_requests_total\{route="other",status="401"\} 20000/);
    expect(metrics).toMatch(/cml_requests_total\{route="\/predict",status="499"\} 1/);
  });

  it('429 and 503 say when to retry', async () => {
    const res = await post(
      `${s.url}/predict`,
      { request: { prompt: question, max_new_tokens: 200, min_new_tokens: 200, stream: true } },
      auth,
    );
    const reader = res.body!.getReader();
    await reader.read(); // the only slot is busy
    const busy = await post(`${s.url}/predict`, { request: { prompt: 'x' } }, auth);
    expect(busy.status).toBe(429);
    expect(busy.headers.get('retry-after')).toBe('1');
    await reader.cancel();
  });
});

describe('sockets held open', () => {
  // Nothing else talks to this server: every connection it counts is the test's own.
  let s: Started;
  beforeAll(async () => {
    s = await start({ slots: 1, apiKey: 'sesame', http: { headersTimeoutS: 1, bodyTimeoutS: 1, maxConnections: 6 } });
  });
  afterAll(() => s?.close());

  const connect = () =>
    new Promise<net.Socket>((resolve, reject) => {
      const c = net.connect(s.port, '127.0.0.1', () => resolve(c));
      c.once('error', reject);
    });
  const closed = (c: net.Socket) =>
    new Promise<string>((resolve) => {
      let data = '';
      c.on('data', (d) => (data += d.toString()));
      c.once('close', () => resolve(data));
    });

  it('a socket that never sends its headers, and a body that never arrives, are closed', async () => {
    const silent = await connect();
    const half = await connect();
    half.write(
      `POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sesame\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"request"`,
    );
    // Node's defaults would hold both for minutes (headers 60 s, request 300 s): past this test's time.
    const [a, b] = await Promise.all([closed(silent), closed(half)]);
    expect(a).toMatch(/^(|HTTP\/1\.1 408 [\s\S]*)$/);
    expect(b).toMatch(/^(|HTTP\/1\.1 408 [\s\S]*)$/);
  });

  it('connections past the cap are refused at once, and the server still answers', async () => {
    const held = await Promise.all(Array.from({ length: 6 }, connect));
    const extra = await connect();
    expect(await closed(extra)).toBe(''); // closed without a byte
    for (const c of held) c.destroy();
    let status = 0;
    for (let i = 0; i < 20 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      status = await fetch(`${s.url}/health`).then(
        (r) => r.status,
        () => 0,
      );
    }
    expect(status).toBe(200);
  });
});

describe('a cached merged model that no longer loads', () => {
  it('is merged again at the next start, and served merged', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cml-merged-cache-'));
    await withCacheDir(dir, async () => {
      const first = await start();
      await first.close();
      const merged = readdirSync(dir).find((f) => f.startsWith('merged-'))!;
      const size = statSync(path.join(dir, merged)).size;
      truncateSync(path.join(dir, merged), Math.floor(size / 2)); // a disk that filled, a copy cut short
      const lines: string[] = [];
      const logged = pino({ level: 'warn' }, { write: (l: string) => lines.push(l) });
      const s = await startServer(loadConfig({}, { port: 0, threads: 1, slots: 1 }), logged);
      await s.ready;
      try {
        const url = `http://127.0.0.1:${s.port}`;
        expect(await (await fetch(`${url}/health`)).json()).toMatchObject({ status: 'ready', adapter_merged: true });
        expect(await predict(url, { prompt: question, do_sample: false })).toEqual({
          status: 200,
          body: { success: true, response: ' The capital of Belithne is Ulqua!' },
        });
        expect(lines.join('')).toMatch(/the cached merged model does not load: merging again/);
        expect(statSync(path.join(dir, merged)).size).toBe(size);
      } finally {
        await s.close();
      }
    });
  });
});
