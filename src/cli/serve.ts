// `serve` (= npm start) and `predict`: configuration from Fine Tuning Studio's env, flags win.
import cliProgress from 'cli-progress';
import { pino } from 'pino';
import { loadConfig, type Overrides, tensorSplitFrom } from '../cml/config.ts';
import { openPredictor } from '../cml/open.ts';
import { startServer } from '../server/server.ts';

export interface ServeFlags {
  port?: number;
  host?: string;
  model?: string;
  adapter?: string;
  adapterNone?: boolean;
  modelsDir?: string;
  apiKey?: string;
  slots?: number;
  maxQueue?: number;
  context?: number;
  threads?: number;
  backend?: string;
  genConfig?: string;
  /** commander's --no-merge: false when given. */
  merge?: boolean;
  /** commander's --no-check-tensors: false when given. */
  checkTensors?: boolean;
  /** commander's --no-parse-special: false when given. */
  parseSpecial?: boolean;
  tokenizer?: string;
  chatTemplate?: string;
  headersTimeout?: number;
  bodyTimeout?: number;
  keepAliveTimeout?: number;
  maxConnections?: number;
  drainTimeout?: number;
  splitMode?: string;
  mainGpu?: number;
  tensorSplit?: string;
}

function overrides(f: ServeFlags): Overrides {
  const o: Overrides = {};
  if (f.port !== undefined) o.port = f.port;
  if (f.host !== undefined) o.host = f.host;
  if (f.model !== undefined) o.baseModel = f.model;
  if (f.adapter !== undefined) o.adapter = f.adapter;
  if (f.adapterNone) o.adapter = null;
  if (f.modelsDir !== undefined) o.modelsDir = f.modelsDir;
  if (f.apiKey !== undefined) o.apiKey = f.apiKey;
  if (f.slots !== undefined) o.slots = f.slots;
  if (f.maxQueue !== undefined) o.maxQueue = f.maxQueue;
  if (f.context !== undefined) o.contextSize = f.context;
  if (f.threads !== undefined) o.threads = f.threads;
  if (f.backend !== undefined) o.backend = f.backend as Overrides['backend'];
  if (f.genConfig !== undefined) o.genConfigString = f.genConfig;
  if (f.merge === false) o.mergeAdapter = false;
  if (f.checkTensors === false) o.checkTensors = false;
  if (f.parseSpecial === false) o.parseSpecial = false;
  if (f.tokenizer !== undefined) o.tokenizer = f.tokenizer as Overrides['tokenizer'];
  if (f.chatTemplate !== undefined) o.chatTemplateFile = f.chatTemplate;
  if (f.drainTimeout !== undefined) o.drainTimeoutS = f.drainTimeout;
  if (f.splitMode !== undefined) o.splitMode = f.splitMode as Overrides['splitMode'];
  if (f.mainGpu !== undefined) o.mainGpu = f.mainGpu;
  const split = tensorSplitFrom(f.tensorSplit);
  if (split !== undefined) o.tensorSplit = split;
  const http: NonNullable<Overrides['http']> = {};
  if (f.headersTimeout !== undefined) http.headersTimeoutS = f.headersTimeout;
  if (f.bodyTimeout !== undefined) http.bodyTimeoutS = f.bodyTimeout;
  if (f.keepAliveTimeout !== undefined) http.keepAliveTimeoutS = f.keepAliveTimeout;
  if (f.maxConnections !== undefined) http.maxConnections = f.maxConnections;
  if (Object.keys(http).length > 0) o.http = http;
  return o;
}

/** Progress bars on a terminal (a fetch from the Hub, then the load); nothing otherwise (the logs say). */
function loadProgress(): {
  onProgress?: (f: number) => void;
  onFetch?: (done: number, total: number) => void;
  done: () => void;
} {
  if (!process.stderr.isTTY) return { done: () => {} };
  const bar = (format: string) =>
    new cliProgress.SingleBar(
      { format, stream: process.stderr, hideCursor: true, clearOnComplete: true },
      cliProgress.Presets.shades_classic,
    );
  const load = bar('loading model [{bar}] {percentage}%');
  const fetch = bar('fetching from the Hub [{bar}] {percentage}% {value}/{total} MB');
  let fetching = false;
  let loading = false;
  return {
    onFetch: (done, total) => {
      if (!fetching) fetch.start(Math.max(1, Math.round(total / 2 ** 20)), 0);
      fetching = true;
      fetch.update(Math.round(done / 2 ** 20));
      if (done >= total) fetch.stop();
    },
    onProgress: (f) => {
      if (!loading) load.start(100, 0);
      loading = true;
      load.update(Math.round(f * 100));
    },
    done: () => {
      fetch.stop();
      load.stop();
    },
  };
}

export async function runServe(flags: ServeFlags): Promise<void> {
  const cfg = loadConfig(process.env, overrides(flags));
  const log = pino({ name: 'cml-lora-serve', level: cfg.logLevel });
  const progress = loadProgress();
  const running = await startServer(cfg, log, progress.onProgress, progress.onFetch);
  // From the start, loading included: SIGTERM drains (/health 503 at once, requests in flight
  // finish up to the drain timeout), then exits 0. A second signal exits at once.
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, drainTimeoutS: cfg.drainTimeoutS }, 'draining');
    running
      .drain(cfg.drainTimeoutS * 1000)
      .then((report) => {
        log.info(report, 'drained');
        // A model still loading is not waited for: nothing was served from it.
        return running.state.status === 'failed' || running.state.predictor ? running.close() : undefined;
      })
      .then(
        () => process.exit(0),
        (err: Error) => {
          log.error({ err: err.message }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // Started by a parent that owns this server (the CML model script): once that parent is gone,
  // however it went (SIGKILL too), this process is reparented and drains as on SIGTERM.
  const parent = Number(process.env.CML_LORA_SERVE_PARENT_PID);
  if (Number.isInteger(parent) && parent > 1) {
    setInterval(() => {
      if (!stopping && process.ppid !== parent) stop('parent exited');
    }, 500).unref();
  }
  try {
    await running.ready;
  } catch (err) {
    progress.done();
    if (stopping) return; // a shutdown during the load: the handler exits
    log.error({ err: (err as Error).message }, 'model failed to load');
    await running.close();
    throw err;
  }
  progress.done();
}

export async function runPredict(flags: ServeFlags & { prompt: string; request?: string }): Promise<void> {
  const cfg = loadConfig(process.env, overrides(flags));
  const request = flags.request ? (JSON.parse(flags.request) as Record<string, unknown>) : {};
  const predictor = await openPredictor(cfg, { warn: (f, m) => console.error(`warning: ${m}: ${String(f.error)}`) });
  try {
    for (const w of cfg.warnings) console.error(`warning: ${w}`);
    process.stdout.write(`${await predictor.predict({ ...request, prompt: flags.prompt })}\n`);
  } finally {
    await predictor.engine.close();
  }
}
