// npm run fuzz -- --cases 10000: random and extreme requests at a real server, some of them at once,
// some abandoned mid-way; greedy requests from a pool are checked against what each gave alone.
// Passes with 0 crashes, 0 answers >= 500, 0 failed connections and 0 mismatches.
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { intArg } from '../../src/cli/args.ts';
import { greedyPool, pick, rng, rssRows, send, ServerProcess, table, type PoolRequest, type Send } from './harness.ts';

export interface FuzzOptions {
  cases: number;
  concurrency: number;
  seed: number;
  slots: number;
  threads: number;
  log?: (line: string) => void;
}

export interface FuzzReport {
  cases: number;
  byStatus: Record<string, number>;
  crashes: string[];
  serverErrors: string[];
  connectionErrors: number;
  mismatches: string[];
  checked: number;
  busyAtEnd: number;
  table: string;
}

// Values that have broken servers: float32 overflow and underflow, integer edges, numbers as text,
// the wrong types, sizes.
const NUMBERS = [
  0,
  -0,
  1,
  -1,
  0.5,
  1.5,
  1e-45,
  1e-7,
  1e-6,
  3.4e38,
  1e39,
  -1e39,
  1e308,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  -(2 ** 31),
  16,
  16.5,
  -16,
  100,
  1000,
  1e5,
  1e9,
];
const STRINGS = [
  '',
  'x',
  '0.5',
  '1e39',
  'NaN',
  'Infinity',
  '-Infinity',
  'true',
  'false',
  'none',
  'null',
  '\u0000',
  '💥'.repeat(100),
  'y'.repeat(10_000),
];

function extreme(r: () => number): unknown {
  const k = r();
  if (k < 0.45) return pick(r, NUMBERS) * (r() < 0.2 ? -1 : 1);
  if (k < 0.7) return pick(r, STRINGS);
  if (k < 0.78) return r() < 0.5;
  if (k < 0.84) return null;
  if (k < 0.9) return [pick(r, NUMBERS), pick(r, STRINGS)];
  if (k < 0.95) return { a: pick(r, NUMBERS) };
  return Math.floor(r() * 300) - 50;
}

const PREDICT_PARAMS = [
  'temperature',
  'top_p',
  'top_k',
  'repetition_penalty',
  'max_new_tokens',
  'min_new_tokens',
  'num_beams',
  'do_sample',
  'seed',
  'stop',
  'adapter',
  'adapter_scale',
  'stream',
  'max_length',
  'nonsense',
];
const OPENAI_PARAMS = [
  'max_tokens',
  'temperature',
  'top_p',
  'presence_penalty',
  'frequency_penalty',
  'logprobs',
  'seed',
  'stop',
  'n',
  'best_of',
  'echo',
  'stream',
  'model',
  'logit_bias',
];

function deep(n: number): string {
  return `${'['.repeat(n)}${']'.repeat(n)}`;
}

/** One case: what to send, and the pool entry to compare with when it is a checked greedy request. */
function makeCase(r: () => number, pool: PoolRequest[]): { send: Send; check?: PoolRequest; stream?: boolean } {
  const k = r();
  const abort = r() < 0.06 ? { abortAfterMs: Math.floor(r() * 60) } : {};
  if (k < 0.25) {
    const p = pick(r, pool);
    const stream = r() < 0.5;
    return {
      send: {
        path: '/predict',
        body: JSON.stringify({ request: { ...p.request, ...(stream ? { stream: true } : {}) } }),
        ...abort,
      },
      check: abort.abortAfterMs === undefined ? p : undefined,
      stream,
    };
  }
  if (k < 0.37) {
    const request = {
      prompt: pick(r, pool).request.prompt,
      temperature: 0.1 + r() * 1.5,
      top_k: Math.floor(r() * 60),
      top_p: 0.05 + r() * 0.95,
      max_new_tokens: 1 + Math.floor(r() * 30),
      seed: Math.floor(r() * 1000),
      ...(r() < 0.3 ? { stream: true } : {}),
    };
    return { send: { path: '/predict', body: JSON.stringify({ request }), ...abort } };
  }
  if (k < 0.72) {
    const request: Record<string, unknown> = { prompt: pick(r, pool).request.prompt, max_new_tokens: 8 };
    for (let i = 0, n = 1 + Math.floor(r() * 3); i < n; i++) request[pick(r, PREDICT_PARAMS)] = extreme(r);
    if (r() < 0.1) request.prompt = extreme(r);
    return { send: { path: '/predict', body: JSON.stringify({ request }), ...abort } };
  }
  if (k < 0.87) {
    const bodies: (() => string | Buffer)[] = [
      () => '{"request": ',
      () => '{"request": {"prompt": "x", "temperature": NaN}}',
      () => JSON.stringify([1, 2]),
      () => JSON.stringify('request'),
      () => JSON.stringify({ request: null }),
      () => JSON.stringify({ request: [] }),
      () => JSON.stringify({ prompt: 'x' }),
      () => JSON.stringify({ request: { prompt: 'x'.repeat(Math.floor(r() * 4_800_000)) } }),
      () => JSON.stringify({ request: { prompt: 'Question: <s></s><unk> \u0000 💥 é\nAnswer:', max_new_tokens: 4 } }),
      () => Buffer.from(Array.from({ length: 200 }, () => Math.floor(r() * 256))),
      () => `{"request": ${deep(100_000)}}`,
      () => JSON.stringify({ request: { prompt: 'x', stop: Array.from({ length: 500 }, (_, i) => `s${i}`) } }),
      () => JSON.stringify({ request: { prompt: '' } }),
    ];
    const headers: Record<string, string> = r() < 0.1 ? { 'content-type': 'text/plain' } : {};
    return { send: { path: '/predict', body: pick(r, bodies)(), headers, ...abort } };
  }
  if (k < 0.96) {
    const b: Record<string, unknown> = { prompt: pick(r, pool).request.prompt, max_tokens: 6 };
    for (let i = 0, n = Math.floor(r() * 3); i < n; i++) b[pick(r, OPENAI_PARAMS)] = extreme(r);
    if (r() < 0.3) b.logit_bias = { [String(Math.floor(r() * 1000) - 100)]: extreme(r) };
    return { send: { path: '/v1/completions', body: JSON.stringify(b), ...abort } };
  }
  const method = pick(r, ['GET', 'PUT', 'DELETE', 'HEAD', 'POST']);
  return {
    send: {
      path: pick(r, [
        '/predict',
        '/v1/models',
        `/v1/${Math.floor(r() * 1e6)}`,
        '/health',
        '/metrics',
        '/%',
        '/..%2f..%2fetc',
      ]),
      method,
      body: '{}',
    },
  };
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const log = o.log ?? (() => {});
  const server = new ServerProcess({ slots: o.slots, threads: o.threads, env: { MAX_QUEUE: '256' } });
  await server.start();
  const r = rng(o.seed);
  const pool = await greedyPool(server.url, 40, r);
  log(
    `server ${server.url}, pool of ${pool.length} greedy requests run alone; ${o.cases} cases, ${o.concurrency} at once, seed ${o.seed}`,
  );
  const byStatus: Record<string, number> = {};
  const serverErrors: string[] = [];
  const mismatches: string[] = [];
  let connectionErrors = 0;
  let checked = 0;
  let next = 0;
  const worker = async () => {
    while (next < o.cases) {
      const n = next++;
      const c = makeCase(r, pool);
      const res = await send(server.url, c.send);
      const key = res.status === -1 ? 'client aborted' : res.status === 0 ? 'connection failed' : String(res.status);
      byStatus[key] = (byStatus[key] ?? 0) + 1;
      if (res.status >= 500)
        serverErrors.push(
          `case ${n}: ${res.status} ${res.text.slice(0, 200)} for ${String(c.send.body).slice(0, 200)}`,
        );
      if (res.status === 0) {
        connectionErrors++;
        if (await server.revive()) log(`case ${n}: the server had died (${server.crashes.at(-1)}); started again`);
      }
      if (c.check && res.status === 200) {
        checked++;
        const got = res.streamed ? res.streamed.text : (JSON.parse(res.text) as { response: string }).response;
        if (got !== c.check.alone || (res.streamed && !res.streamed.done))
          mismatches.push(
            `case ${n}: ${JSON.stringify(c.check.request)} gave ${JSON.stringify(got)}, alone ${JSON.stringify(c.check.alone)}`,
          );
      }
      if ((n + 1) % 1000 === 0) log(`${n + 1} cases`);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  await new Promise((res) => setTimeout(res, 300)); // abandoned requests leave their slots
  const busyAtEnd = Number((await server.health())?.busy_slots ?? -1);
  await server.stop();
  const rows: [string, string | number][] = [
    ['cases', o.cases],
    ...Object.entries(byStatus)
      .sort()
      .map(([k, v]) => [`  status ${k}`, v] as [string, number]),
    ['crashes', server.crashes.length],
    ['5xx', serverErrors.length],
    ['failed connections', connectionErrors],
    ['greedy outputs checked', checked],
    ['mismatches with the same prompt alone', mismatches.length],
    ...rssRows(server.rss),
    ['slots busy at the end', busyAtEnd],
  ];
  return {
    cases: o.cases,
    byStatus,
    crashes: server.crashes,
    serverErrors,
    connectionErrors,
    mismatches,
    checked,
    busyAtEnd,
    table: table(rows),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const cli = new Command()
    .option('--cases <n>', 'requests to send', intArg('--cases', 1), 10_000)
    .option('--concurrency <n>', 'requests at once', intArg('--concurrency', 1), 16)
    .option('--seed <n>', 'random seed', intArg('--seed', 0), 1)
    .option('--slots <n>', 'server slots', intArg('--slots', 1), 8)
    .option('--threads <n>', 'server threads', intArg('--threads', 1), 1)
    .parse();
  const rep = await runFuzz({ ...(cli.opts() as Omit<FuzzOptions, 'log'>), log: (l) => console.error(l) });
  console.log(rep.table);
  for (const line of [...rep.crashes, ...rep.serverErrors, ...rep.mismatches].slice(0, 20)) console.log(line);
  const ok =
    rep.crashes.length === 0 &&
    rep.serverErrors.length === 0 &&
    rep.connectionErrors === 0 &&
    rep.mismatches.length === 0 &&
    rep.busyAtEnd === 0;
  process.exitCode = ok ? 0 : 1;
}
