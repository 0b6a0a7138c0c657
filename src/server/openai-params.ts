// One parameter mapping for OpenAI's completions and chat completions: the request's values over
// the deployment's gen config over the studio's defaults (Predictor.resolve), vLLM's names for the
// extensions (top_k, min_p, repetition_penalty, min_tokens, ignore_eos), and every other key either
// harmless metadata or a 400 that names it: nothing a client asks for is ignored without a word.
import { AdapterRequestError } from '../cml/adapters.ts';
import { grammarForJsonSchema, JSON_OBJECT_GRAMMAR } from '../cml/grammar.ts';
import type { Predictor } from '../cml/predict.ts';
import { BadRequestError } from '../cml/gen-config.ts';
import { boundMessage, type GenerateParams, withinBound } from '../engine/index.ts';
import { HttpError } from './errors.ts';

/** Keys that change nothing we compute (metadata, or a value we check to be the only one we do). */
const METADATA = ['model', 'user', 'metadata', 'store', 'service_tier'];

const SHARED = [
  'stream',
  'stream_options',
  'temperature',
  'top_p',
  'max_tokens',
  'stop',
  'seed',
  'presence_penalty',
  'frequency_penalty',
  'logit_bias',
  'n',
  'top_k',
  'min_p',
  'repetition_penalty',
  'min_tokens',
  'ignore_eos',
  'response_format',
  'grammar',
];
export const COMPLETION_KEYS = [...METADATA, ...SHARED, 'prompt', 'logprobs', 'echo', 'best_of'];
export const CHAT_KEYS = [...METADATA, ...SHARED, 'messages', 'logprobs', 'top_logprobs', 'max_completion_tokens'];

export interface OpenAiRequest {
  params: GenerateParams;
  /** The adapter the request runs on (null: the base model). */
  adapter: string | null;
  /** Top log-probabilities per token (0: none). */
  logprobs: number;
  /** stream_options.include_usage: a last chunk with the usage. */
  includeUsage: boolean;
  stream: boolean;
  /** Choices per prompt (OpenAI's n); choice j of a seeded request samples with seed + j. */
  n: number;
}

/**
 * `model` → the adapter: absent, or the served model's name, is the served default; "base" the base
 * model; an adapter's name that adapter; anything else a 404, never a silent default.
 */
export async function adapterFor(model: unknown, servedName: string, predictor: Predictor): Promise<string | null> {
  if (model === undefined || model === null || model === servedName) return predictor.adapter;
  if (model === 'base') return null;
  if (typeof model === 'string') {
    try {
      await predictor.useAdapter(model);
      return model;
    } catch (e) {
      if (!(e instanceof AdapterRequestError && e.status === 404)) throw e;
    }
  }
  const names = predictor.engine.adapters().map((a) => a.name);
  throw new HttpError(
    404,
    `model ${JSON.stringify(model)} not found: use ${[servedName, 'base', ...names].map((n) => `'${n}'`).join(', ')}, or an adapter in ADAPTERS_DIR`,
  );
}

export async function openAiRequest(
  b: Record<string, unknown>,
  keys: string[],
  servedName: string,
  predictor: Predictor,
  logprobs: (b: Record<string, unknown>) => number,
): Promise<OpenAiRequest> {
  const unknown = Object.keys(b).filter((k) => !keys.includes(k) && b[k] !== undefined && b[k] !== null);
  if (unknown.length) {
    throw new BadRequestError(
      `${unknown.join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not supported (supported: ${keys.filter((k) => !METADATA.includes(k)).join(', ')})`,
    );
  }
  const bounds = predictor.engine.bounds;
  const num = (k: string, ok: (n: number) => boolean = () => true): number | undefined => {
    const v = b[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
      throw new BadRequestError(`${k} is out of range or not a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (k: string): boolean | undefined => {
    const v = b[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw new BadRequestError(`${k} must be true or false`);
    return v;
  };
  const n = num('n', (x) => Number.isInteger(x) && x >= 1 && x <= 16) ?? 1;
  const bestOf = num('best_of', (x) => Number.isInteger(x) && x >= 1) ?? n;
  if (bestOf !== n)
    throw new BadRequestError('best_of other than n is not supported (it needs scoring whole sequences)');
  const adapter = await adapterFor(b.model, servedName, predictor);

  // The studio's names, for Predictor.resolve: only what the request sets, so the gen config fills the rest.
  const layer: Record<string, unknown> = {};
  const temperature = num('temperature', (n) => n >= 0 && n <= 2);
  if (temperature !== undefined) {
    layer.temperature = temperature;
    layer.do_sample = temperature > 0;
  }
  const set = (from: string, to: string) => {
    if (b[from] !== undefined && b[from] !== null) layer[to] = b[from];
  };
  set('top_p', 'top_p');
  set('top_k', 'top_k');
  set('repetition_penalty', 'repetition_penalty');
  set('seed', 'seed');
  set('stop', 'stop');
  set('min_tokens', 'min_new_tokens');
  set('max_tokens', 'max_new_tokens');
  set('max_completion_tokens', 'max_new_tokens');
  set('grammar', 'grammar'); // llama-server's and vLLM's extension: a GBNF grammar
  const rf = b.response_format as { type?: unknown; json_schema?: { schema?: unknown } } | undefined | null;
  if (rf !== undefined && rf !== null) {
    if (typeof rf !== 'object' || typeof rf.type !== 'string')
      throw new BadRequestError('response_format must be {"type": ...}');
    if (rf.type === 'json_object') {
      if (!JSON_OBJECT_GRAMMAR)
        throw new BadRequestError("response_format json_object is unavailable: llama.cpp's json.gbnf is missing");
      layer.grammar = JSON_OBJECT_GRAMMAR;
    } else if (rf.type === 'json_schema') {
      if (!rf.json_schema || typeof rf.json_schema !== 'object') {
        throw new BadRequestError('response_format json_schema needs {"json_schema": {"schema": {...}}}');
      }
      layer.grammar = grammarForJsonSchema(rf.json_schema.schema, 'response_format.json_schema.schema');
    } else if (rf.type !== 'text') throw new BadRequestError(`response_format type '${rf.type}' is not supported`);
    if (layer.grammar !== undefined && b.grammar !== undefined && b.grammar !== null) {
      throw new BadRequestError('give response_format or grammar, not both');
    }
  }
  const params = predictor.resolve(layer, adapter);

  const minP = num('min_p');
  if (minP !== undefined) {
    if (!withinBound(bounds.minP, minP)) throw new BadRequestError(boundMessage(bounds.minP, 'min_p', minP));
    params.minP = minP;
  }
  const presence = num('presence_penalty', (n) => n >= -2 && n <= 2);
  if (presence !== undefined) params.presencePenalty = presence;
  const frequency = num('frequency_penalty', (n) => n >= -2 && n <= 2);
  if (frequency !== undefined) params.frequencyPenalty = frequency;
  if (bool('ignore_eos')) params.ignoreEos = true;
  if (b.logit_bias !== undefined && b.logit_bias !== null) {
    const lb = b.logit_bias;
    if (typeof lb !== 'object' || Array.isArray(lb))
      throw new BadRequestError('logit_bias must be an object of token id -> bias');
    for (const [id, v] of Object.entries(lb)) {
      if (typeof v !== 'number' || !withinBound(bounds.logitBias, v))
        throw new BadRequestError(boundMessage(bounds.logitBias, `logit_bias['${id}']`, v));
    }
    params.logitBias = lb as Record<number, number>;
  }
  const lp = logprobs(b);
  if (lp > 0) params.logprobs = lp;
  const so = b.stream_options;
  if (so !== undefined && so !== null) {
    const extra = typeof so === 'object' ? Object.keys(so).filter((k) => k !== 'include_usage') : ['(not an object)'];
    if (extra.length) throw new BadRequestError(`stream_options ${extra.join(', ')} is not supported`);
  }
  const stream = bool('stream') ?? false;
  return {
    params,
    adapter,
    logprobs: lp,
    includeUsage: stream && (so as { include_usage?: unknown } | null)?.include_usage === true,
    stream,
    n,
  };
}

/** The parameters of choice j of n: with a seed, seed + j, so that the choices differ and repeat. */
export function choiceParams(params: GenerateParams, j: number): GenerateParams {
  return j === 0 || params.seed === undefined ? params : { ...params, seed: (params.seed + j) % 2 ** 32 };
}
