// What the routes need from the running server: the predictor once the model is loaded, and the
// shared metrics, key and logger.
import type { Logger } from 'pino';
import type { Predictor } from '../cml/predict.ts';
import { HttpError } from './errors.ts';
import type { Metrics } from './metrics.ts';

export interface ServerState {
  status: 'loading' | 'ready' | 'failed';
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
}

export function readyPredictor(ctx: AppContext): Predictor {
  if (ctx.state.status !== 'ready' || !ctx.state.predictor) {
    throw new HttpError(503, ctx.state.status === 'failed' ? `model failed to load: ${ctx.state.error}` : 'model is loading');
  }
  return ctx.state.predictor;
}
