// The CML predict contract: a request dict in, the continuation out (prompt not echoed: the engine
// only ever returns new tokens, so nothing is cut by characters as the original script does).
// The HTTP layer and the Python entry point both come through here.
import type { Engine, EngineClient, Generation, GenerateParams } from '../engine/index.ts';
import type { PromptTokenizer } from '../intake/hf-tokenizer.ts';
import { AdapterRequestError, type AdapterLibrary } from './adapters.ts';
import type { ChatFormat } from './chat.ts';
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
    /** The checkpoint's own tokenizer for text prompts; null: llama.cpp's (see loadHfTokenizer). */
    private readonly tokenizer: PromptTokenizer | null = null,
    /** The model's chat template, for /v1/chat/completions; null when it has none. */
    readonly chat: ChatFormat | null = null,
    /** Adapters loaded by name while the server runs; null: only the served one. */
    readonly library: AdapterLibrary | null = null,
  ) {}

  /**
   * An adapter a request names: loaded already, or from ADAPTERS_DIR on this first use; a name
   * found nowhere is a 404, never the default adapter in its place.
   */
  async useAdapter(name: string): Promise<void> {
    if (this.core.adapters().some((a) => a.name === name)) {
      this.library?.touch(name);
      return;
    }
    if (await this.library?.ensure(name)) return;
    throw new AdapterRequestError(404, `adapter '${name}' not found (not loaded, and not in ADAPTERS_DIR)`);
  }

  /**
   * A request layer (the studio's parameter names) over the deployment's gen config and the studio's
   * defaults, for `adapter` (null: the base model): what every route starts from.
   */
  resolve(layer: Record<string, unknown>, adapter: string | null): GenerateParams {
    return resolveGeneration({ ...layer, adapter }, this.genConfig, this.adapter, this.core.bounds).params;
  }

  /**
   * A text prompt as the engine gets it: the checkpoint tokenizer's ids when there is one (and
   * special tokens are parsed, which it always does), else the text for llama.cpp to tokenize.
   */
  /** llama.cpp's tokenization of a text prompt (what a text prompt becomes without a checkpoint tokenizer). */
  tokenize(text: string, addSpecial = true, parseSpecial?: boolean): number[] {
    return this.core.tokenize(text, addSpecial, parseSpecial);
  }

  async promptFor(text: string, parseSpecial?: boolean, addSpecial = true): Promise<string | number[]> {
    return this.tokenizer && parseSpecial !== false ? this.tokenizer.encode(text, addSpecial) : text;
  }

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

  /** Starts generation; bad requests and engine errors (bad adapter, overflow, queue full) reject. */
  async start(request: unknown, signal?: AbortSignal): Promise<Generation> {
    const { prompt, params } = this.prepare(request);
    for (const a of Array.isArray(params.adapters) ? params.adapters : []) await this.useAdapter(a.name);
    const input = await this.promptFor(prompt, params.parseSpecial);
    return this.core.generate(input, params, signal ? { signal } : {});
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
    return (await (await this.start(request, signal)).result).text;
  }
}
