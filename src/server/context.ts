// What the routes need from the running server: the predictor once the model is loaded, and the
// shared metrics, key and logger.
import type { Logger } from 'pino';
import type { Predictor } from '../cml/predict.ts';
import type { Generation, GenerationResult } from '../engine/index.ts';
import { HttpError } from './errors.ts';
import type { Metrics } from './metrics.ts';

export interface ServerState {
  /** draining: shutting down; requests in flight finish, new ones get 503. */
  status: 'loading' | 'ready' | 'failed' | 'draining';
  predictor: Predictor | null;
  error?: string;
  /** Names shown by /health and accepted as OpenAI `model`. */
  modelName: string;
  adapterName: string | null;
}

export interface AppContext {
  state: ServerState;
  metrics: Metrics;
  apiKey: string | null;
  log: Logger;
  /** The generations requests are waiting on, so that a shutdown can end those left at its deadline. */
  live: Set<Generation>;
  /** Set when a shutdown ended the live generations: why, as their requests are told. */
  shutdown: { reason: string | null };
  /** Origins browsers may call from (empty: no CORS headers). */
  corsOrigins: string[];
}

export function newAppContext(
  state: ServerState,
  metrics: Metrics,
  apiKey: string | null,
  log: Logger,
  corsOrigins: string[] = [],
): AppContext {
  return { state, metrics, apiKey, log, live: new Set(), shutdown: { reason: null }, corsOrigins };
}

/** Registers a request's generation until it settles. */
export function track(ctx: AppContext, gen: Generation): Generation {
  ctx.live.add(gen);
  gen.result.finally(() => ctx.live.delete(gen)).catch(() => {});
  return gen;
}

/** The 503 a request gets when a shutdown, not its client, cancelled its generation. */
export function endedByShutdown(ctx: AppContext, r: GenerationResult): HttpError | null {
  return r.stopReason === 'cancelled' && ctx.shutdown.reason ? new HttpError(503, ctx.shutdown.reason) : null;
}

export function readyPredictor(ctx: AppContext): Predictor {
  if (ctx.state.status === 'draining')
    throw new HttpError(503, 'the server is shutting down: send the request again (to another replica)');
  if (ctx.state.status !== 'ready' || !ctx.state.predictor) {
    throw new HttpError(
      503,
      ctx.state.status === 'failed' ? `model failed to load: ${ctx.state.error}` : 'model is loading',
    );
  }
  return ctx.state.predictor;
}
