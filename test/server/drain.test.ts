// Shutdown: /health and new requests get 503 at once, requests in flight finish up to the drain
// timeout, what is left then ends with an error event (streams) or a 503; `npm start` passes the
// signal to the server and exits 0.
import { spawn } from 'node:child_process';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { startServer } from '../../src/server/server.ts';
import { freePort, root } from '../helpers.ts';

const log = pino({ level: 'silent' });
const question = 'Question: What is the capital of Belithne?\nAnswer:';
const post = (url: string, body: unknown) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** The SSE events of a response, parsed, once it ends. */
async function events(res: Response): Promise<Record<string, unknown>[]> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((f) => f.startsWith('data: '))
    .map((f) => JSON.parse(f.slice(6)) as Record<string, unknown>);
}

async function started(slots: number) {
  const s = await startServer(loadConfig({}, { port: 0, threads: 1, slots, maxQueue: 8 }), log);
  await s.ready;
  return Object.assign(s, { url: `http://127.0.0.1:${s.port}` });
}

/** Resolves once the engine holds `n` requests: they are in flight, not still on their way in. */
async function inFlight(s: Awaited<ReturnType<typeof started>>, n: number): Promise<void> {
  for (let i = 0; i < 500 && (s.state.predictor?.engine.stats().inFlight ?? 0) < n; i++)
    await new Promise((r) => setTimeout(r, 10));
  expect(s.state.predictor!.engine.stats().inFlight).toBe(n);
}

/** Resolves once the stream has sent its first token event: the request is running, not queued. */
async function running(res: Response): Promise<Response> {
  const [a, b] = res.body!.tee();
  const reader = a.getReader();
  await reader.read();
  void reader.cancel().catch(() => {});
  return new Response(b);
}

describe('drain', () => {
  it('requests in flight finish with their done event; /health and new requests get 503 meanwhile', async () => {
    const s = await started(2);
    const long = { prompt: question, max_new_tokens: 200, min_new_tokens: 200, do_sample: false };
    const stream = await running(await post(`${s.url}/predict`, { request: { ...long, stream: true } }));
    const plain = post(`${s.url}/predict`, { request: long });
    await inFlight(s, 2);
    const drained = s.drain(30_000);
    const health = await fetch(`${s.url}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'draining' });
    const refused = await post(`${s.url}/predict`, { request: { prompt: question } });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await refused.json()).errors[0]).toMatch(/shutting down/);

    const ev = await events(stream);
    expect(ev.at(-1)).toMatchObject({ done: true, stop_reason: 'length', usage: { completion_tokens: 200 } });
    expect((await (await plain).json()).success).toBe(true);
    expect(await drained).toMatchObject({ inFlight: 2, cut: 0 });
    await s.close();
  });

  it('past the drain timeout, streams end with an error event and plain requests with a 503', async () => {
    const s = await started(1);
    const long = { prompt: question, max_new_tokens: 200, min_new_tokens: 200, do_sample: false };
    const stream = await running(await post(`${s.url}/predict`, { request: { ...long, stream: true } }));
    const queued = post(`${s.url}/predict`, { request: long }); // waits for the only slot
    await inFlight(s, 2);
    const report = await s.drain(1);
    expect(report).toMatchObject({ inFlight: 2, cut: 2 });
    const ev = await events(stream);
    expect(ev.some((e) => e.done)).toBe(false);
    expect(ev.at(-1)).toEqual({
      success: false,
      errors: [expect.stringMatching(/^the server shut down before this request finished/)],
    });
    const plain = await queued;
    expect(plain.status).toBe(503);
    expect((await plain.json()).errors[0]).toMatch(/shut down before this request finished/);
    await s.close();
  });
});

describe('npm start', () => {
  it('SIGTERM to npm reaches the server: the stream in flight finishes, npm exits 0, the port is free', async () => {
    const port = await freePort();
    const npm = spawn('npm', ['start', '--silent'], {
      cwd: root,
      env: { ...process.env, PORT: String(port), THREADS: '1', SLOTS: '2' },
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 300; i++) {
      if (
        (await fetch(`${url}/health`).then(
          (r) => r.status,
          () => 0,
        )) === 200
      )
        break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const stream = await running(
      await post(`${url}/predict`, {
        request: { prompt: question, max_new_tokens: 200, min_new_tokens: 200, stream: true },
      }),
    );
    npm.kill('SIGTERM');
    const ev = await events(stream);
    expect(ev.at(-1)).toMatchObject({ done: true, usage: { completion_tokens: 200 } });
    expect(await exited).toBe(0);
    await expect(fetch(`${url}/health`)).rejects.toThrow(); // nobody holds the port
  }, 60_000);
});
