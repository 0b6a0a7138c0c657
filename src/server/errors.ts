// One place that maps every failure to an HTTP status and CML's error envelope.
import type { ErrorRequestHandler } from 'express';
import {
  AdapterError,
  ContextOverflowError,
  EngineClosedError,
  EngineStateError,
  InvalidParamsError,
  NonFiniteError,
  QueueFullError,
} from '../engine/index.ts';
import { BadRequestError } from '../cml/gen-config.ts';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface HttpFailure {
  status: number;
  message: string;
}

export function toHttp(err: unknown): HttpFailure {
  if (err instanceof HttpError) return { status: err.status, message: err.message };
  if (err instanceof BadRequestError || err instanceof InvalidParamsError || err instanceof ContextOverflowError) {
    return { status: 400, message: err.message };
  }
  // An adapter named that is not there is the request's 404; the merged one cannot be replaced (409).
  if (err instanceof AdapterError) {
    return {
      status: err.code === 'UNKNOWN_ADAPTER' ? 404 : err.code === 'ADAPTER_MERGED' ? 409 : 400,
      message: err.message,
    };
  }
  // The request's own numbers overflowed (its adapter scale, or weights it alone reaches): nothing
  // else was hurt, and the same request would fail again.
  if (err instanceof NonFiniteError) return { status: 422, message: err.message };
  if (err instanceof QueueFullError) return { status: 429, message: `model.busy: ${err.message}` };
  if (err instanceof EngineClosedError || err instanceof EngineStateError) return { status: 503, message: err.message };
  // body-parser's own errors carry a type and a 4xx status
  const e = err as { type?: string; status?: number; message?: string };
  if (e?.type === 'entity.too.large') return { status: 413, message: 'request body is larger than 5 MB' };
  if (e?.type === 'entity.parse.failed') return { status: 400, message: `malformed JSON body: ${e.message}` };
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    return { status: e.status, message: e.message ?? 'bad request' };
  }
  return { status: 500, message: 'internal error' };
}

/** What 429 and 503 answers tell a client to wait before it tries again, in seconds. */
export const RETRY_AFTER_S = 1;

export const cmlEnvelope = (f: HttpFailure) => ({ success: false, errors: [f.message] });

/** OpenAI clients read `error`; CML-style clients read `errors`: the body carries both. */
export const openAiEnvelope = (f: HttpFailure) => ({
  ...cmlEnvelope(f),
  error: { message: f.message, type: f.status >= 500 ? 'server_error' : 'invalid_request_error', code: f.status },
});

export function errorHandler(onInternal: (err: unknown) => void): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const f = toHttp(err);
    if (f.status >= 500) onInternal(err);
    res.locals.failure = f;
    if (res.headersSent) {
      res.end();
      return;
    }
    if (f.status === 429 || f.status === 503) res.set('Retry-After', String(RETRY_AFTER_S));
    const body = req.path.startsWith('/v1/') ? openAiEnvelope(f) : cmlEnvelope(f);
    res.status(f.status).json(body);
  };
}
