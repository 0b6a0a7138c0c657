// npm run soak -- --clients 64 --minutes 10 --disconnect 0.2: many clients at once for a long time,
// a share of them leaving mid-request; every greedy answer that completes is compared with what
// the same request gave alone, and the server's RSS is followed for a leak.
// Passes with 0 crashes, 0 answers >= 500, 0 mismatches and no slot left busy.
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { fractionArg, intArg, positiveArg } from '../../src/cli/args.ts';
import { greedyPool, pick, rng, rssRows, rssSlope, send, ServerProcess, streamed, table } from './harness.ts';

export interface SoakOptions {
  clients: number;
  seconds: number;
  /** Share of requests whose client goes away before the answer is complete. */
  disconnect: number;
  seed: number;
  slots: number;
  threads: number;
  log?: (line: string) => void;
}

export interface SoakReport {
  requests: number;
  completed: number;
  disconnected: number;
  byStatus: Record<string, number>;
  crashes: string[];
  serverErrors: string[];
  mismatches: string[];
  busyAtEnd: number;
  rssSlopeMbPerMin: number;
  /** The closing SIGTERM, sent with `clients` streams in flight (most of them queued). */
  drain: { inFlight: number; done: number; cut: number; exitCode: number | null; ms: number };
  table: string;
}

export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const log = o.log ?? (() => {});
  // A queue as deep as the clients: a full server answers 429, which a soak would only count.
  const server = new ServerProcess({ slots: o.slots, threads: o.threads, env: { MAX_QUEUE: String(o.clients) } });
  await server.start();
  const r = rng(o.seed);
  const pool = await greedyPool(server.url, 60, r);
  log(
    `server ${server.url}, ${o.clients} clients for ${o.seconds} s, ${Math.round(o.disconnect * 100)}% disconnect, seed ${o.seed}`,
  );
  const byStatus: Record<string, number> = {};
  const serverErrors: string[] = [];
  const mismatches: string[] = [];
  let requests = 0;
  let completed = 0;
  let disconnected = 0;
  const deadline = performance.now() + o.seconds * 1000;
  let lastLog = performance.now();
  const client = async () => {
    while (performance.now() < deadline) {
      const p = pick(r, pool);
      const stream = r() < 0.5;
      const leave = r() < o.disconnect;
      requests++;
      const res = await send(server.url, {
        path: '/predict',
        body: JSON.stringify({ request: { ...p.request, ...(stream ? { stream: true } : {}) } }),
        ...(leave ? { abortAfterMs: Math.floor(r() * 40) } : {}),
      });
      const key = res.status === -1 ? 'client left' : res.status === 0 ? 'connection failed' : String(res.status);
      byStatus[key] = (byStatus[key] ?? 0) + 1;
      if (res.status === -1) disconnected++;
      if (res.status >= 500 || res.status === 0) serverErrors.push(`${res.status} ${res.text.slice(0, 200)}`);
      if (res.status === 0 && (await server.revive()))
        log(`the server had died (${server.crashes.at(-1)}); started again`);
      if (res.status === 200) {
        completed++;
        const got = res.streamed ? res.streamed.text : (JSON.parse(res.text) as { response: string }).response;
        if (got !== p.alone || (res.streamed && !res.streamed.done))
          mismatches.push(`${JSON.stringify(p.request)} gave ${JSON.stringify(got)}, alone ${JSON.stringify(p.alone)}`);
      }
      if (performance.now() - lastLog > 60_000) {
        lastLog = performance.now();
        log(
          `${requests} requests, ${completed} completed, ${mismatches.length} mismatches, RSS ${server.rss.at(-1)?.mb.toFixed(1)} MB`,
        );
      }
    }
  };
  await Promise.all(Array.from({ length: o.clients }, client));
  await new Promise((res) => setTimeout(res, 500)); // abandoned requests leave their slots
  const busyAtEnd = Number((await server.health())?.busy_slots ?? -1);
  // Then the shutdown: a stream per client, SIGTERM once all have their headers, and how each ends.
  const burst = Array.from({ length: o.clients }, () => streamed(server.url, { ...pick(r, pool).request }));
  await Promise.all(burst.map((b) => b.started));
  const t0 = performance.now();
  const exitCode = await server.stop();
  const ends = await Promise.all(burst.map((b) => b.ended));
  const drain = {
    inFlight: burst.length,
    done: ends.filter((e) => e.done).length,
    cut: ends.filter((e) => !e.done).length,
    exitCode,
    ms: Math.round(performance.now() - t0),
  };
  const slope = rssSlope(server.rss);
  const rows: [string, string | number][] = [
    ['clients / seconds / disconnect', `${o.clients} / ${o.seconds} / ${o.disconnect}`],
    ['requests', requests],
    ...Object.entries(byStatus)
      .sort()
      .map(([k, v]) => [`  ${k}`, v] as [string, number]),
    ['crashes', server.crashes.length],
    ['5xx or failed connections', serverErrors.length],
    ['mismatches with the same prompt alone', `${mismatches.length} of ${completed} completed`],
    ...rssRows(server.rss),
    ['slots busy at the end', busyAtEnd],
    [
      'SIGTERM with streams in flight',
      `${drain.inFlight}: ${drain.done} ended with done, ${drain.cut} cut; exit ${drain.exitCode} after ${drain.ms} ms`,
    ],
  ];
  return {
    requests,
    completed,
    disconnected,
    byStatus,
    crashes: server.crashes,
    serverErrors,
    mismatches,
    busyAtEnd,
    rssSlopeMbPerMin: slope,
    drain,
    table: table(rows),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const cli = new Command()
    .option('--clients <n>', 'clients at once', intArg('--clients', 1), 64)
    .option('--minutes <m>', 'how long', positiveArg('--minutes'), 10)
    .option('--disconnect <p>', 'share of requests abandoned mid-way', fractionArg('--disconnect'), 0.2)
    .option('--seed <n>', 'random seed', intArg('--seed', 0), 1)
    .option('--slots <n>', 'server slots', intArg('--slots', 1), 8)
    .option('--threads <n>', 'server threads', intArg('--threads', 1), 1)
    .parse();
  const f = cli.opts() as {
    clients: number;
    minutes: number;
    disconnect: number;
    seed: number;
    slots: number;
    threads: number;
  };
  const rep = await runSoak({ ...f, seconds: f.minutes * 60, log: (l) => console.error(l) });
  console.log(rep.table);
  for (const line of [...rep.crashes, ...rep.serverErrors, ...rep.mismatches].slice(0, 20)) console.log(line);
  const drained = rep.drain.cut === 0 && rep.drain.exitCode === 0;
  process.exitCode =
    rep.crashes.length === 0 &&
    rep.serverErrors.length === 0 &&
    rep.mismatches.length === 0 &&
    rep.busyAtEnd === 0 &&
    drained
      ? 0
      : 1;
}
