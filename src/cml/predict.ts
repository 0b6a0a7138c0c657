// The CML predict contract: a request dict in, the continuation out (prompt not echoed: the engine
// only ever returns new tokens, so nothing is cut by characters as the original script does).
// The HTTP layer and the Python entry point both come through here.
import type { Engine, EngineClient, Generation, GenerateParams } from '../engine/index.ts';
import { BadRequestError, resolveGeneration } from './gen-config.ts';

export interface PredictRequest {
  prompt: string;
  [param: string]: unknown;
}

export const DEFAULT_ADAPTER = 'default';

export class Predictor {
  constructor(
    private readonly core: Engine,
    private readonly genConfig: Record<string, unknown>,
    /** The adapter a request without `adapter` gets (null: the base model). */
    readonly adapter: string | null,
  ) {}

  /** The engine as the server may use it (EngineClient), not its loading and adapter management. */
  get engine(): EngineClient {
    return this.core;
  }

  /** Checks a request and turns it into engine parameters; throws BadRequestError. */
  prepare(request: unknown): { prompt: string; params: GenerateParams } {
    if (request === null || typeof request !== 'object' || Array.isArray(request)) {
      throw new BadRequestError('request must be a JSON object with a "prompt"');
    }
    const r = request as Record<string, unknown>;
    if (typeof r.prompt !== 'string') throw new BadRequestError('request.prompt must be a string');
    const { params } = resolveGeneration(r, this.genConfig, this.adapter, this.core.bounds);
    return { prompt: r.prompt, params };
  }

  /** Starts generation; engine errors (bad adapter, overflow, queue full) throw synchronously. */
  start(request: unknown, signal?: AbortSignal): Generation {
    const { prompt, params } = this.prepare(request);
    return this.core.generate(prompt, params, signal ? { signal } : {});
  }

  /**
   * Checks the env generation config against the loaded model: its ranges, its adapter, and that
   * max_new_tokens fits the context. Throws what a request using it alone would meet.
   */
  checkGenConfig(): void {
    const { params } = resolveGeneration({}, this.genConfig, this.adapter, this.core.bounds);
    this.core.validate([Math.max(this.core.model.bos, 0)], params);
  }

  /** api_wrapper(args): the bare continuation string. */
  async predict(request: unknown, signal?: AbortSignal): Promise<string> {
    return (await this.start(request, signal).result).text;
  }
}
