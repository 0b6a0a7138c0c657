// Starts listening at once (so /health can answer 503 while loading), then loads the model. Owns
// the HTTP server's limits (timeouts, a connection cap) and the drain on shutdown.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, type ServeConfig } from '../cml/config.ts';
import { openPredictor } from '../cml/open.ts';
import { createApp } from './app.ts';
import { newAppContext, type ServerState } from './context.ts';
import { Metrics } from './metrics.ts';

export interface DrainReport {
  /** Requests running when the drain began. */
  inFlight: number;
  /** Of those, ended by the drain timeout (their streams got an error event, plain ones a 503). */
  cut: number;
  ms: number;
}

export interface RunningServer {
  port: number;
  state: ServerState;
  /** Resolves when the model is loaded (rejects if it fails to load). */
  ready: Promise<void>;
  /**
   * Stops taking requests (503 with Retry-After, /health 503) and waits up to timeoutMs for those
   * in flight; whatever still runs then is ended. close() afterwards frees the rest.
   */
  drain(timeoutMs: number): Promise<DrainReport>;
  close(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE')
        reject(
          new ConfigError(
            `port ${port} on ${host} is already in use (EADDRINUSE): stop what holds it, or set PORT / --port`,
          ),
        );
      else if (err.code === 'EACCES')
        reject(new ConfigError(`no permission to listen on ${host}:${port} (EACCES): use a port above 1023`));
      else reject(err);
    });
    server.listen(port, host, () => resolve());
  });
}

export async function startServer(
  cfg: ServeConfig,
  log: Logger,
  onProgress?: (f: number) => void,
  /** A base model fetched from the Hub, bytes so far (a terminal's progress bar); else log lines. */
  onFetch?: (done: number, total: number) => void,
): Promise<RunningServer> {
  const state: ServerState = {
    status: 'loading',
    predictor: null,
    modelName: path.basename(cfg.baseModel),
    adapterName: null,
  };
  const ctx = newAppContext(
    state,
    new Metrics(() => state.predictor?.engine.stats() ?? null),
    cfg.apiKey,
    log,
    cfg.corsOrigins,
  );
  for (const w of cfg.warnings) log.warn(w);

  const l = cfg.http;
  const server = createServer(
    {
      headersTimeout: l.headersTimeoutS * 1000,
      requestTimeout: l.bodyTimeoutS * 1000,
      keepAliveTimeout: l.keepAliveTimeoutS * 1000,
      // How often Node looks for connections past those timeouts (its default, 30 s, would let a
      // 10 s limit run to 40).
      connectionsCheckingInterval: Math.max(100, Math.min(1000, l.headersTimeoutS * 500)),
    },
    createApp(ctx),
  );
  server.maxConnections = l.maxConnections;
  await listen(server, cfg.port, cfg.host);
  const port = (server.address() as AddressInfo).port;
  log.info({ host: cfg.host, port, ...l }, 'listening');

  // A base model fetched from the Hub: a log line at each tenth (a replica's log is no terminal).
  let tenth = -1;
  const onDownload =
    onFetch ??
    ((done: number, total: number) => {
      const t = total > 0 ? Math.floor((done / total) * 10) : 10;
      if (t > tenth) {
        tenth = t;
        log.info(
          { mb: Math.round(done / 2 ** 20), totalMb: Math.round(total / 2 ** 20) },
          `fetching the base model from the Hub: ${t * 10}%`,
        );
      }
    });
  const ready = openPredictor(cfg, {
    info: (f, m) => log.info(f, m),
    warn: (f, m) => log.warn(f, m),
    onDownload,
    ...(onProgress ? { onProgress } : {}),
  }).then(
    (predictor) => {
      state.predictor = predictor;
      state.adapterName = predictor.adapter;
      if (state.status === 'loading') state.status = 'ready';
      log.info({ slots: cfg.slots, maxQueue: cfg.maxQueue }, 'ready');
    },
    (err: Error) => {
      state.status = 'failed';
      state.error = err.message;
      throw err;
    },
  );
  ready.catch(() => {});

  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));
  return {
    port,
    state,
    ready,
    async drain(timeoutMs) {
      const t0 = performance.now();
      // Still listening: a balancer that has not yet seen /health fail gets 503 + Retry-After for
      // what it sends meanwhile, not refused connections.
      state.status = 'draining';
      const inFlight = ctx.live.size;
      const settled = Promise.allSettled([...ctx.live].map((g) => g.result));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        settled.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
      ]);
      clearTimeout(timer);
      const cut = timedOut ? ctx.live.size : 0;
      if (timedOut) {
        ctx.shutdown.reason = `the server shut down before this request finished (drain timeout ${timeoutMs / 1000} s)`;
        for (const g of ctx.live) g.cancel();
        await settled;
      }
      await new Promise((r) => setImmediate(r)); // the routes write their last bytes
      return { inFlight, cut, ms: Math.round(performance.now() - t0) };
    },
    async close() {
      server.close();
      server.closeAllConnections(); // streams and keep-alive sockets would hold close() open
      await closed;
      await ready.catch(() => {});
      await state.predictor?.engine.close();
    },
  };
}
