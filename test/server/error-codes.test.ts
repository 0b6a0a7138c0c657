// Every code the addon can report has its class and its HTTP status: a code added to
// native/error_codes.h without both fails here.
import { describe, expect, it } from 'vitest';
import * as E from '../../src/engine/index.ts';
import { toHttp } from '../../src/server/errors.ts';

const table: Record<string, [new (message: string, code: string) => E.EngineError, number]> = {
  INVALID_PARAMS: [E.InvalidParamsError, 400],
  UNKNOWN_ADAPTER: [E.AdapterError, 404], // a name that is not there
  CONTEXT_OVERFLOW: [E.ContextOverflowError, 400],
  QUEUE_FULL: [E.QueueFullError, 429],
  ENGINE_CLOSED: [E.EngineClosedError, 503],
  NOT_LOADED: [E.EngineClosedError, 503],
  ALREADY_LOADED: [E.EngineStateError, 503],
  LOADING: [E.EngineStateError, 503],
  // At start-up, never a request's: the start fails with the reason.
  MODEL_NOT_FOUND: [E.ModelLoadError, 500],
  MODEL_INVALID: [E.ModelLoadError, 500],
  MODEL_LOAD_FAILED: [E.ModelLoadError, 500],
  CONTEXT_FAILED: [E.ModelLoadError, 500],
  MERGE_FAILED: [E.MergeError, 500],
  ADAPTER_LOAD_FAILED: [E.AdapterError, 400],
  // llama_decode failing is our fault; a request's own overflow is not.
  DECODE_FAILED: [E.DecodeError, 500],
  NON_FINITE: [E.NonFiniteError, 422],
};

describe('native error codes', () => {
  it("each has a class and an HTTP status, and the table lists exactly the addon's codes", () => {
    const codes = E.resolveBackend('cpu').addon.errorCodes();
    expect([...codes].sort()).toEqual(Object.keys(table).sort());
    for (const code of codes) {
      const [Cls, status] = table[code]!;
      const err = E.fromNative({ code, message: `a ${code}` });
      expect(err, code).toBeInstanceOf(Cls);
      expect(toHttp(err).status, code).toBe(status);
    }
  });
});
