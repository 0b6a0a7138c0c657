// The one boundary the HTTP layer sees of an engine (as vLLM's EngineClient): start a generation,
// the adapters served, the numbers /health and /metrics show, and shutting down. Engine implements
// it; the routes never reach past it (to the addon, the model's files, the scheduler's settings),
// so another engine behind the same routes (remote, one per GPU) needs only these members.
import type { GenerateParams } from './engine.ts';
import type { Generation } from './generation.ts';
import type { NativeAdapterInfo, NativeStats } from './native.ts';
import type { ParamBounds } from './params.ts';

/** A registered adapter; `merged` marks the one in the model's weights. */
export type ServedAdapter = NativeAdapterInfo & { merged: boolean };

/** What /health reports of the engine. */
export interface EngineHealth {
  /** cpu | cuda (the backend in use). */
  backend: string;
  busySlots: number;
  queued: number;
  /** An adapter is merged into the weights (its requests run at the base model's speed). */
  adapterMerged: boolean;
  /** Requests of different adapters share a decode (the adapter bank passed its check at load). */
  adapterBank: boolean;
}

export interface EngineClient {
  /**
   * Starts a request. Bad parameters, an unknown adapter, context overflow and a full queue throw
   * synchronously; the Generation streams chunks and settles `result`.
   */
  generate(prompt: string | number[], params?: GenerateParams, opts?: { signal?: AbortSignal }): Generation;
  /** Text of token ids. */
  detokenize(ids: number[]): string;
  /** Each token's own text, leading space kept (OpenAI's logprobs are keyed by it). */
  tokenPieces(ids: number[]): string[];
  /** The bounds of every numeric request parameter, for errors under the API's own names. */
  readonly bounds: ParamBounds;
  adapters(): ServedAdapter[];
  stats(): NativeStats;
  health(): EngineHealth;
  /** Ends every request (they fail with EngineClosedError) and frees the model. */
  close(): Promise<void>;
}
