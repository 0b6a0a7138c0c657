// Typed errors: every failure the engine reports carries a stable `code` (the native side's) and
// a class to catch by.

export class EngineError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Missing, unreadable, non-GGUF, truncated or unsupported model file. */
export class ModelLoadError extends EngineError {}
/** Adapter file that cannot be read or does not fit the model; or an unknown adapter name. */
export class AdapterError extends EngineError {}
/** A generation parameter of the wrong type or out of range. */
export class InvalidParamsError extends EngineError {}
/** Prompt + max new tokens do not fit a slot's context. */
export class ContextOverflowError extends EngineError {}
/** Every slot is busy and the queue is at its limit. */
export class QueueFullError extends EngineError {}
/** The engine was closed, or is not loaded yet. */
export class EngineClosedError extends EngineError {}
/** load() called twice, or close() while loading: a caller's order of calls, not a request's fault. */
export class EngineStateError extends EngineError {}
/** The requested backend cannot be used (for example CUDA without a CUDA build or GPU). */
export class BackendError extends EngineError {}
/** The AbortSignal passed to generate() was already aborted. */
export class AbortedError extends EngineError {}
/** llama_decode failed while the request ran. */
export class DecodeError extends EngineError {}
/** The request's logits became NaN or infinite (an adapter scale or weights beyond float range); the request stopped, nothing else did. */
export class NonFiniteError extends EngineError {}
/** Writing a merged model failed (I/O); bad inputs are ModelLoadError or AdapterError. */
export class MergeError extends EngineError {}

const byCode: Record<string, new (message: string, code: string) => EngineError> = {
  MODEL_NOT_FOUND: ModelLoadError,
  MODEL_INVALID: ModelLoadError,
  MODEL_LOAD_FAILED: ModelLoadError,
  CONTEXT_FAILED: ModelLoadError,
  ADAPTER_LOAD_FAILED: AdapterError,
  UNKNOWN_ADAPTER: AdapterError,
  INVALID_PARAMS: InvalidParamsError,
  CONTEXT_OVERFLOW: ContextOverflowError,
  QUEUE_FULL: QueueFullError,
  ENGINE_CLOSED: EngineClosedError,
  NOT_LOADED: EngineClosedError,
  ALREADY_LOADED: EngineStateError,
  LOADING: EngineStateError,
  DECODE_FAILED: DecodeError,
  NON_FINITE: NonFiniteError,
  MERGE_FAILED: MergeError,
};

/** Turns an error thrown or reported by the addon into its typed class. */
export function fromNative(err: unknown): Error {
  if (err instanceof EngineError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const Cls = code ? byCode[code] : undefined;
  return Cls ? new Cls(message, code!) : err instanceof Error ? err : new Error(message);
}
