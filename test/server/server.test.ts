// The real server on a loopback port with the embedded tiny-qa model.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { createApp } from '../../src/server/app.ts';
import { newAppContext } from '../../src/server/context.ts';
import { Metrics } from '../../src/server/metrics.ts';
import { startServer, type RunningServer } from '../../src/server/server.ts';
import { loadReference, withCacheDir } from '../helpers.ts';

const log = pino({ level: 'silent' });
const ref = loadReference('tiny-qa');
const question = ref.cases[0]!.prompt; // "Question: What is the capital of Belithne?\nAnswer:"

async function start(overrides: Parameters<typeof loadConfig>[1] = {}): Promise<RunningServer & { url: string }> {
  const s = await startServer(loadConfig({}, { port: 0, threads: 1, slots: 4, ...overrides }), log);
  await s.ready;
  return Object.assign(s, { url: `http://127.0.0.1:${s.port}` });
}

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

async function sse(res: Response): Promise<unknown[]> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((f) => f.startsWith('data: '))
    .map((f) => f.slice(6))
    .map((d) => (d === '[DONE]' ? d : JSON.parse(d)));
}

describe('POST /predict', () => {
  let s: RunningServer & { url: string };
  beforeAll(async () => {
    s = await start();
  });
  afterAll(() => s?.close());

  it("answers in CML's envelope, prompt not echoed", async () => {
    const res = await post(`${s.url}/predict`, { request: { prompt: question, do_sample: false } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ success: true, response: ' The capital of Belithne is Ulqua!' });
  });

  it('accepts an accessKey in the body or the query', async () => {
    const res = await post(`${s.url}/predict?accessKey=abc`, {
      accessKey: 'abc',
      request: { prompt: question, do_sample: false },
    });
    expect((await res.json()).response).toBe(' The capital of Belithne is Ulqua!');
  });

  it('the adapter can be switched off per request', async () => {
    const res = await post(`${s.url}/predict`, { request: { prompt: question, do_sample: false, adapter: null } });
    expect((await res.json()).response).toBe(' Vegri.');
  });

  it('streams with request.stream or Accept: text/event-stream; pieces concatenate to the plain response', async () => {
    const request = { prompt: question, do_sample: false };
    const plain = (await (await post(`${s.url}/predict`, { request })).json()).response;
    for (const [body, headers] of [
      [{ request: { ...request, stream: true } }, {}],
      [{ request }, { accept: 'text/event-stream' }],
    ] as const) {
      const res = await post(`${s.url}/predict`, body, headers);
      expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
      const events = (await sse(res)) as Record<string, unknown>[];
      const done = events.at(-1)!;
      const tokens = events.slice(0, -1).map((e) => e.token as string);
      expect(tokens.length).toBeGreaterThan(5);
      expect(tokens.join('')).toBe(plain);
      // The same prompt ran just before: all of it but its last token comes from the prompt cache.
      expect(done).toMatchObject({
        done: true,
        response: plain,
        stop_reason: 'eos',
        usage: { prompt_tokens: 16, completion_tokens: 12, prompt_tokens_details: { cached_tokens: 15 } },
      });
    }
  });

  it("special-token text in the prompt is the control token, as the studio's tokenizer(prompt); parse_special: false keeps it text", async () => {
    const usage = async (extra: object) => {
      const res = await post(`${s.url}/predict`, {
        request: { prompt: `${question}</s>`, do_sample: false, max_new_tokens: 1, stream: true, ...extra },
      });
      return ((await sse(res)).at(-1) as { usage: { prompt_tokens: number } }).usage.prompt_tokens;
    };
    // question is 16 tokens with the BOS; '</s>' adds EOS's one id, or its pieces as text.
    expect(await usage({})).toBe(17);
    expect(await usage({ parse_special: false })).toBeGreaterThan(17);
  });

  it('text held back for a possible stop string is streamed at the end, not dropped', async () => {
    // '!' could begin the stop string '!?', so it is held back until EOS shows it does not.
    const request = { prompt: question, do_sample: false, stop: ['!?'] };
    const plain = (await (await post(`${s.url}/predict`, { request })).json()).response;
    expect(plain).toBe(' The capital of Belithne is Ulqua!');
    const events = (await sse(await post(`${s.url}/predict`, { request: { ...request, stream: true } }))) as Record<
      string,
      unknown
    >[];
    const tokens = events.filter((e) => typeof e.token === 'string').map((e) => e.token as string);
    expect(tokens.join('')).toBe(plain);
    expect(tokens.at(-1)).toBe('!');
    expect(events.at(-1)).toMatchObject({ done: true, response: plain, stop_reason: 'eos' });
  });

  it('8 concurrent clients get the right answers', async () => {
    const cases = ref.cases.filter((c) => c.mode !== 'adapter@0.5').slice(0, 8);
    const answers = await Promise.all(
      cases.map(async (c) => {
        const request = {
          prompt: c.prompt,
          do_sample: false,
          repetition_penalty: 1,
          max_new_tokens: 24,
          ...(c.mode === 'base' ? { adapter: null } : {}),
        };
        return (await (await post(`${s.url}/predict`, { request })).json()).response as string;
      }),
    );
    expect(answers.map((a) => a.trim())).toEqual(cases.map((c) => c.greedy_text.trim()));
  });

  it.each([
    ['malformed JSON', '{"request": ', /malformed JSON/],
    ['no request', { prompt: 'x' }, /body must be \{"request"/],
    ['prompt not a string', { request: { prompt: 3 } }, /prompt must be a string/],
    ['NaN temperature', '{"request": {"prompt": "x", "temperature": NaN}}', /malformed JSON/],
    ['temperature "hot"', { request: { prompt: 'x', temperature: 'hot' } }, /temperature/],
    ['negative max_new_tokens', { request: { prompt: 'x', max_new_tokens: -5 } }, /max_new_tokens/],
    ['beam search', { request: { prompt: 'x', num_beams: 3 } }, /num_beams/],
    ['context overflow', { request: { prompt: 'x', max_new_tokens: 100000 } }, /exceeds the context/],
  ])('400 for %s', async (_name, body, message) => {
    const res = await post(`${s.url}/predict`, body);
    expect(res.status).toBe(400);
    const json = await res.json();
    expect(json.success).toBe(false);
    expect(json.errors.join(' ')).toMatch(message);
  });

  it('404 for an adapter that is neither loaded nor in ADAPTERS_DIR, never the default in its place', async () => {
    const res = await post(`${s.url}/predict`, { request: { prompt: 'x', adapter: 'other' } });
    expect(res.status).toBe(404);
    expect((await res.json()).errors.join(' ')).toMatch(/adapter 'other' not found/);
  });

  it('413 for a body over 5 MB', async () => {
    const res = await post(`${s.url}/predict`, { request: { prompt: 'x'.repeat(5 * 1024 * 1024 + 10) } });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ success: false, errors: ['request body is larger than 5 MB'] });
  });

  it('404 for other routes, in the same envelope', async () => {
    const res = await fetch(`${s.url}/nope`);
    expect(res.status).toBe(404);
    expect((await res.json()).success).toBe(false);
  });

  it('GET /health and /metrics', async () => {
    const health = await fetch(`${s.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({
      status: 'ready',
      adapter: 'default',
      adapter_merged: true,
      adapter_bank: true, // 4 slots: the bank's check ran and passed
      backend: expect.stringMatching(/^(cpu|cuda)$/),
    });
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    for (const name of [
      'cml_requests_total',
      'cml_request_errors_total',
      'cml_queue_depth',
      'cml_prompt_tokens_total',
      'cml_generated_tokens_total',
      'cml_time_to_first_token_seconds',
      'cml_decode_tokens_per_second',
    ]) {
      expect(metrics).toContain(name);
    }
    expect(metrics).toMatch(/cml_requests_total\{route="\/predict",status="400"\} \d+/);
    // Earlier tests in this file generated tokens, so the scheduler has run steps and spent time.
    expect(Number(/cml_scheduler_steps_total (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(Number(/cml_scheduler_seconds_total\{phase="decode"\} ([\d.e-]+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(metrics).toMatch(/^cml_scheduler_adapter_switches_total \d+$/m);
  });

  it('still serves after every error', async () => {
    const res = await post(`${s.url}/predict`, { request: { prompt: question, do_sample: false } });
    expect((await res.json()).response).toBe(' The capital of Belithne is Ulqua!');
  });
});

describe('busy, disconnect, key', () => {
  let s: RunningServer & { url: string };
  beforeAll(async () => {
    s = await start({ slots: 1, maxQueue: 0, apiKey: 'sesame' });
  });
  afterAll(() => s?.close());
  const auth = { authorization: 'Bearer sesame' };
  const long = { request: { prompt: question, max_new_tokens: 230, min_new_tokens: 230, stream: true } };

  it('401 without or with a wrong key; /health stays open', async () => {
    expect((await post(`${s.url}/predict`, { request: { prompt: 'x' } })).status).toBe(401);
    const wrong = await post(`${s.url}/predict`, { request: { prompt: 'x' } }, { authorization: 'Bearer nope' });
    expect(wrong.status).toBe(401);
    expect((await wrong.json()).errors[0]).toMatch(/API key/);
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
  });

  it('429 model.busy when the slot and queue are full; a disconnect cancels the generation', async () => {
    const first = await post(`${s.url}/predict`, long, auth).then(async (r) => {
      const reader = r.body!.getReader();
      await reader.read(); // the stream has started: the only slot is busy
      return reader;
    });
    const busy = await post(`${s.url}/predict`, { request: { prompt: 'x' } }, auth);
    expect(busy.status).toBe(429);
    expect((await busy.json()).errors[0]).toMatch(/^model\.busy/);

    await first.cancel(); // the client goes away
    const t0 = Date.now();
    let busySlots = 1;
    while (busySlots > 0 && Date.now() - t0 < 5000) {
      busySlots = (await (await fetch(`${s.url}/health`)).json()).busy_slots;
    }
    expect(busySlots).toBe(0);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    const generated = Number(/cml_generated_tokens_total (\d+)/.exec(metrics)![1]);
    expect(generated).toBeLessThan(2000);
    // and the slot serves the next request
    const next = await post(`${s.url}/predict`, { request: { prompt: question, do_sample: false } }, auth);
    expect((await next.json()).response).toBe(' The capital of Belithne is Ulqua!');
  });
});

describe('POST /v1/completions', () => {
  let s: RunningServer & { url: string };
  beforeAll(async () => {
    s = await start();
  });
  afterAll(() => s?.close());

  it('plain and streamed, the same text', async () => {
    const body = { prompt: question, temperature: 0, max_tokens: 30 };
    const plain = await (await post(`${s.url}/v1/completions`, body)).json();
    expect(plain).toMatchObject({
      object: 'text_completion',
      choices: [{ text: ' The capital of Belithne is Ulqua!', index: 0, finish_reason: 'stop' }],
      usage: { prompt_tokens: 16, completion_tokens: 12, total_tokens: 28 },
    });
    const events = await sse(await post(`${s.url}/v1/completions`, { ...body, stream: true }));
    expect(events.at(-1)).toBe('[DONE]');
    const frames = events.slice(0, -1) as { choices: { text: string; finish_reason: string | null }[] }[];
    expect(frames.map((f) => f.choices[0]!.text).join('')).toBe(plain.choices[0].text);
    expect(frames.at(-1)!.choices[0]!.finish_reason).toBe('stop');
  });

  it('model "base" is the base model; logprobs; length', async () => {
    const r = await (
      await post(`${s.url}/v1/completions`, {
        model: 'base',
        prompt: question,
        temperature: 0,
        max_tokens: 3,
        logprobs: 2,
      })
    ).json();
    expect(r.choices[0].text).toBe(' Ve');
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.choices[0].logprobs.tokens).toEqual([' ', 'V', 'e']);
    expect(r.choices[0].logprobs.token_logprobs).toHaveLength(3);
  });

  it('errors carry both envelopes', async () => {
    const res = await post(`${s.url}/v1/completions`, { prompt: question, n: 99 });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      success: false,
      errors: [expect.stringMatching(/^n is out of range/)],
      error: { code: 400 },
    });
  });
});

describe('the adapter served unmerged (MERGE_ADAPTER=off, or a merge that cannot be made)', () => {
  it('answers as the merged one does, for the adapter and for the base', async () => {
    const s = await start({ mergeAdapter: false });
    try {
      expect(await (await fetch(`${s.url}/health`)).json()).toMatchObject({
        adapter: 'default',
        adapter_merged: false,
        adapter_bank: true,
      });
      const ask = async (extra: object) =>
        (await (await post(`${s.url}/predict`, { request: { prompt: question, do_sample: false, ...extra } })).json())
          .response;
      expect(await ask({})).toBe(' The capital of Belithne is Ulqua!');
      expect(await ask({ adapter: null })).toBe(' Vegri.');
    } finally {
      await s.close();
    }
  });

  it('ADAPTER_BANK=0: /health says the bank is off, and both answers stay the same', async () => {
    const s = await startServer(
      loadConfig({ ADAPTER_BANK: '0' }, { port: 0, threads: 1, slots: 4, mergeAdapter: false }),
      log,
    );
    await s.ready;
    const url = `http://127.0.0.1:${s.port}`;
    try {
      expect(await (await fetch(`${url}/health`)).json()).toMatchObject({ adapter_merged: false, adapter_bank: false });
      const ask = async (extra: object) =>
        (await (await post(`${url}/predict`, { request: { prompt: question, do_sample: false, ...extra } })).json())
          .response;
      expect(await ask({})).toBe(' The capital of Belithne is Ulqua!');
      expect(await ask({ adapter: null })).toBe(' Vegri.');
    } finally {
      await s.close();
    }
  });

  it('a merge that fails (here: a CACHE_DIR that cannot exist) is a warning, and serving goes on', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cml-merge-fail-'));
    writeFileSync(path.join(dir, 'file'), '');
    const lines: string[] = [];
    const logged = pino({ level: 'warn' }, { write: (l: string) => lines.push(l) });
    // Under a file: mkdir fails.
    await withCacheDir(
      dir,
      async () => {
        const s = await startServer(loadConfig({}, { port: 0, threads: 1, slots: 2 }), logged);
        await s.ready;
        try {
          expect(await (await fetch(`http://127.0.0.1:${s.port}/health`)).json()).toMatchObject({
            status: 'ready',
            adapter_merged: false,
          });
          const res = await post(`http://127.0.0.1:${s.port}/predict`, {
            request: { prompt: question, do_sample: false },
          });
          expect((await res.json()).response).toBe(' The capital of Belithne is Ulqua!');
          expect(lines.join('')).toMatch(/could not be merged: serving it unmerged/);
        } finally {
          await s.close();
        }
      },
      path.join(dir, 'file', 'cache'),
    );
  });
});

describe('before the model is ready', () => {
  it('/health and /predict answer 503 while loading', async () => {
    const state = { status: 'loading' as const, predictor: null, modelName: 'm', adapterName: null };
    const app = createApp(newAppContext(state, new Metrics(() => null), null, log));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    expect((await fetch(`${url}/health`)).status).toBe(503);
    const res = await post(`${url}/predict`, { request: { prompt: 'x' } });
    expect(res.status).toBe(503);
    expect((await res.json()).errors).toEqual(['model is loading']);
    server.close();
  });

  it('a model that fails to load: ready rejects with the reason, /health says failed', async () => {
    const s = await startServer(loadConfig({}, { port: 0, threads: 1, baseModel: '/no/such/model.gguf' }), log);
    await expect(s.ready).rejects.toThrow(/base model '\/no\/such\/model\.gguf' not found/);
    const health = await (await fetch(`http://127.0.0.1:${s.port}/health`)).json();
    expect(health).toMatchObject({ status: 'failed', error: expect.stringMatching(/not found/) });
    await s.close();
  });
});
