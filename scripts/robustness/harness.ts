// What the fuzz and the soak share: a real server in its own process (so a crash is seen as one,
// counted, and the server started again), its RSS sampled from /proc, a pool of greedy requests
// with what each answers when it runs alone, one HTTP client and the closing table.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** A seeded generator (mulberry32), so a run that found something can be replayed with --seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
export const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

export interface ServerOptions {
  slots: number;
  threads: number;
  /** Extra environment for the server (its config: API_KEY, MAX_QUEUE, ...). */
  env?: Record<string, string>;
}

/** The server under test, as a process of its own: `node bin/cml-lora-serve.mjs serve`. */
export class ServerProcess {
  url = '';
  crashes: string[] = [];
  rss: { t: number; mb: number }[] = [];
  private child: ChildProcess | null = null;
  private stderrTail = '';
  private sampler: NodeJS.Timeout | null = null;
  private stopping = false;

  constructor(private readonly o: ServerOptions) {}

  async start(): Promise<void> {
    const port = await freePort();
    this.url = `http://127.0.0.1:${port}`;
    const env = {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      SLOTS: String(this.o.slots),
      THREADS: String(this.o.threads),
      ...this.o.env,
    };
    const child = spawn(process.execPath, [path.join(root, 'bin/cml-lora-serve.mjs'), 'serve'], {
      cwd: root,
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-2000)));
    child.once('exit', (code, signal) => {
      if (this.stopping || this.child !== child) return;
      this.crashes.push(`exit ${signal ?? code}: ${this.stderrTail.trim().split('\n').slice(-3).join(' | ')}`);
      this.child = null;
    });
    for (let i = 0; i < 600; i++) {
      if (this.child !== child) throw new Error(`the server exited while starting: ${this.stderrTail}`);
      const ok = await fetch(`${this.url}/health`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    this.sampler ??= setInterval(() => this.sample(), 1000);
    this.sample();
  }

  get alive(): boolean {
    return this.child !== null;
  }

  /** Starts it again after a crash; false when it was alive. */
  async revive(): Promise<boolean> {
    if (this.child) return false;
    await this.start();
    return true;
  }

  private sample(): void {
    const pid = this.child?.pid;
    if (!pid) return;
    try {
      const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
      if (kb > 0) this.rss.push({ t: performance.now(), mb: kb / 1024 });
    } catch {
      // gone between the check and the read: the exit handler counts it
    }
  }

  async health(): Promise<Record<string, unknown> | null> {
    return fetch(`${this.url}/health`).then(
      (r) => r.json() as Promise<Record<string, unknown>>,
      () => null,
    );
  }

  async stop(): Promise<number | null> {
    this.stopping = true;
    if (this.sampler) clearInterval(this.sampler);
    const child = this.child;
    if (!child) return null;
    const code = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    child.kill('SIGTERM');
    return code;
  }
}

export interface PoolRequest {
  request: Record<string, unknown>;
  /** What the server answers for it when nothing else runs. */
  alone: string;
}

/**
 * Greedy requests over the tiny-qa questions (adapter and base, with and without a repetition
 * penalty or a stop string), each run alone first: any later difference is another request's doing.
 */
export async function greedyPool(url: string, size: number, r: () => number): Promise<PoolRequest[]> {
  const questions = readFileSync(path.join(root, 'models/tiny-qa/corpus.txt'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('Question:'))
    .map((q) => `${q}\nAnswer:`);
  const pool: PoolRequest[] = [];
  for (let i = 0; i < size; i++) {
    const prompt = i % 5 === 4 ? `${pick(r, questions)} ${pick(r, questions)}` : pick(r, questions);
    const request: Record<string, unknown> = { prompt, do_sample: false, max_new_tokens: 8 + Math.floor(r() * 40) };
    if (r() < 0.4) request.adapter = null;
    if (r() < 0.3) request.repetition_penalty = 1 + Math.round(r() * 50) / 100;
    if (r() < 0.2) request.stop = pick(r, ['.', '!', ' is', '\n']);
    if (r() < 0.2) request.min_new_tokens = 4;
    const res = await send(url, { path: '/predict', body: JSON.stringify({ request }) });
    if (res.status !== 200)
      throw new Error(`pool request ${JSON.stringify(request)} answered ${res.status}: ${res.text}`);
    pool.push({ request, alone: (JSON.parse(res.text) as { response: string }).response });
  }
  return pool;
}

export interface Sent {
  /** HTTP status; 0 when the connection failed, -1 when the client aborted on purpose. */
  status: number;
  text: string;
  /** For SSE: the concatenated token events and whether a done event came. */
  streamed?: { text: string; done: boolean; error: boolean };
}

export interface Send {
  path: string;
  method?: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  /** Abort after this many ms (a client that goes away). */
  abortAfterMs?: number;
}

export async function send(url: string, s: Send): Promise<Sent> {
  const ac = new AbortController();
  const timer = s.abortAfterMs !== undefined ? setTimeout(() => ac.abort(), s.abortAfterMs) : undefined;
  try {
    const res = await fetch(`${url}${s.path}`, {
      method: s.method ?? 'POST',
      headers: { 'content-type': 'application/json', ...s.headers },
      ...(s.body !== undefined && s.method !== 'GET' && s.method !== 'HEAD'
        ? { body: typeof s.body === 'string' ? s.body : new Uint8Array(s.body) }
        : {}),
      signal: ac.signal,
    });
    const text = await res.text();
    if (!(res.headers.get('content-type') ?? '').includes('text/event-stream')) return { status: res.status, text };
    let streamed = '';
    let done = false;
    let error = false;
    for (const frame of text.split('\n\n')) {
      if (!frame.startsWith('data: ') || frame === 'data: [DONE]') continue;
      const ev = JSON.parse(frame.slice(6)) as Record<string, unknown>;
      if (typeof ev.token === 'string') streamed += ev.token;
      if (ev.done === true) done = true;
      if (ev.success === false || ev.error) error = true;
      const choice = (ev.choices as { text?: string }[] | undefined)?.[0];
      if (choice?.text) streamed += choice.text;
    }
    return { status: res.status, text, streamed: { text: streamed, done, error } };
  } catch (e) {
    return { status: ac.signal.aborted ? -1 : 0, text: String((e as Error).cause ?? e) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A streamed /predict whose first token event is awaited apart from its end: a request known to
 * be running (or queued with its headers out) when something else happens, such as a SIGTERM.
 */
export function streamed(
  url: string,
  request: Record<string, unknown>,
): { started: Promise<void>; ended: Promise<{ done: boolean; error: boolean; text: string }> } {
  let markStarted!: () => void;
  const started = new Promise<void>((r) => (markStarted = r));
  const ended = (async () => {
    const res = await fetch(`${url}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ request: { ...request, stream: true } }),
    });
    markStarted();
    const text = await res.text();
    const events = text
      .split('\n\n')
      .filter((f) => f.startsWith('data: '))
      .map((f) => JSON.parse(f.slice(6)) as Record<string, unknown>);
    return { done: events.some((e) => e.done === true), error: events.some((e) => e.success === false), text };
  })().catch((e: Error) => {
    markStarted();
    return { done: false, error: true, text: String(e.cause ?? e) };
  });
  return { started, ended };
}

/** MB per minute over the samples after the warm-up fraction (least squares). */
export function rssSlope(samples: { t: number; mb: number }[], warmup = 0.2): number {
  const from = samples.length ? samples[0]!.t + (samples.at(-1)!.t - samples[0]!.t) * warmup : 0;
  const s = samples.filter((x) => x.t >= from);
  if (s.length < 3) return 0;
  const mx = s.reduce((a, x) => a + x.t, 0) / s.length;
  const my = s.reduce((a, x) => a + x.mb, 0) / s.length;
  const num = s.reduce((a, x) => a + (x.t - mx) * (x.mb - my), 0);
  const den = s.reduce((a, x) => a + (x.t - mx) ** 2, 0);
  return den === 0 ? 0 : (num / den) * 60_000;
}

export function table(rows: [string, string | number][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

export function rssRows(samples: { t: number; mb: number }[]): [string, string][] {
  const mb = samples.map((s) => s.mb);
  const f = (x: number | undefined) => (x === undefined ? '-' : `${x.toFixed(1)} MB`);
  return [
    ['RSS first / max / last', `${f(mb[0])} / ${f(mb.length ? Math.max(...mb) : undefined)} / ${f(mb.at(-1))}`],
    ['RSS slope after warm-up', `${rssSlope(samples).toFixed(2)} MB/min (${samples.length} samples)`],
  ];
}
