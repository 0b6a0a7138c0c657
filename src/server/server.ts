// Starts listening at once (so /health can answer 503 while loading), then loads the model.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ServeConfig } from '../cml/config.ts';
import { openPredictor } from '../cml/open.ts';
import { createApp } from './app.ts';
import type { AppContext, ServerState } from './context.ts';
import { Metrics } from './metrics.ts';

export interface RunningServer {
  port: number;
  state: ServerState;
  /** Resolves when the model is loaded (rejects if it fails to load). */
  ready: Promise<void>;
  close(): Promise<void>;
}

export async function startServer(cfg: ServeConfig, log: Logger, onProgress?: (f: number) => void): Promise<RunningServer> {
  const state: ServerState = {
    status: 'loading',
    predictor: null,
    modelName: path.basename(cfg.baseModel),
    adapterName: null,
  };
  const ctx: AppContext = { state, metrics: new Metrics(() => state.predictor?.engine.stats() ?? null), apiKey: cfg.apiKey, log };
  for (const w of cfg.warnings) log.warn(w);

  const app = createApp(ctx);
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(cfg.port, cfg.host, () => resolve(s));
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ host: cfg.host, port }, 'listening');

  const ready = openPredictor(cfg, { info: (f, m) => log.info(f, m), warn: (f, m) => log.warn(f, m), ...(onProgress ? { onProgress } : {}) }).then(
    (predictor) => {
      state.predictor = predictor;
      state.adapterName = predictor.engine.adapters()[0]?.name ?? null;
      state.status = 'ready';
      log.info({ slots: cfg.slots, maxQueue: cfg.maxQueue }, 'ready');
    },
    (err: Error) => {
      state.status = 'failed';
      state.error = err.message;
      throw err;
    },
  );
  ready.catch(() => {});

  return {
    port,
    state,
    ready,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections(); // streams and keep-alive sockets would hold close() open
      await closed;
      await ready.catch(() => {});
      await state.predictor?.engine.close();
    },
  };
}
