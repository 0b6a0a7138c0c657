// Fine Tuning Studio's generation config: parsed like the original predict script, merged
// request > env > defaults, and turned into engine parameters. Values coerce as Python would
// ("0.5" -> 0.5); anything else is a BadRequestError naming the parameter.
import { boundMessage, withinBound, type GenerateParams, type ParamBounds, type ParamKey } from '../engine/index.ts';
import { grammarForJsonSchema } from './grammar.ts';

/** DEFAULT_GENERATIONAL_CONFIG of the studio (ft/consts.py). */
export const STUDIO_DEFAULTS = Object.freeze({
  do_sample: true,
  temperature: 0.8,
  max_new_tokens: 60,
  top_p: 1,
  top_k: 50,
  num_beams: 1,
  repetition_penalty: 1.1,
});

export class BadRequestError extends Error {
  readonly status = 400;
}

export interface GenConfigParse {
  config: Record<string, unknown>;
  /** Why the string was not used as given (the original stays silent; we log it). */
  warning?: string;
}

/** json.loads; then with ' replaced by "; then the defaults. Never throws. */
export function parseGenConfigString(raw: string | undefined): GenConfigParse {
  if (raw === undefined || raw.trim() === '') return { config: {} };
  const attempt = (s: string): Record<string, unknown> | Error => {
    try {
      const v: unknown = JSON.parse(s);
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return new Error('it is not a JSON object');
      return v as Record<string, unknown>;
    } catch (e) {
      return e as Error;
    }
  };
  const first = attempt(raw);
  if (!(first instanceof Error)) return { config: first };
  const second = attempt(raw.replaceAll("'", '"'));
  if (!(second instanceof Error)) {
    return {
      config: second,
      warning: 'generation config is not valid JSON; read it with single quotes as double quotes',
    };
  }
  return { config: {}, warning: `generation config ignored, using the studio defaults: ${first.message}` };
}

/** Turns one value into its type; ranges come from the engine's bounds table (see coerceLayer). */
type Coerce = (name: string, v: unknown) => unknown;

const num =
  (integer = false): Coerce =>
  (name, v) => {
    const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN;
    if (typeof v === 'boolean' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
      throw new BadRequestError(`${name} must be ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(v)}`);
    }
    return n;
  };

/** Python's truthy spellings of a boolean: true/false, 1/0, "true"/"false". */
export const coerceBool: Coerce = (name, v) => {
  if (typeof v === 'boolean') return v;
  if (v === 0 || v === 1) return v === 1;
  if (typeof v === 'string' && /^(true|false)$/i.test(v.trim())) return v.trim().toLowerCase() === 'true';
  throw new BadRequestError(`${name} must be true or false, got ${JSON.stringify(v)}`);
};

const stopList: Coerce = (name, v) => {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) {
    throw new BadRequestError(`${name} must be a string or a list of strings`);
  }
  return list.filter((s) => s !== '');
};

const adapterName: Coerce = (name, v) => {
  if (v === null || v === false || v === '' || v === 'none') return null;
  if (typeof v !== 'string') throw new BadRequestError(`${name} must be an adapter name, or null for the base model`);
  return v;
};

/** The parameters a request (or the env config) may set, how each coerces, and its row in the bounds table. */
const PARAMS: Record<string, { coerce: Coerce; bound?: ParamKey }> = {
  temperature: { coerce: num(), bound: 'temperature' },
  top_p: { coerce: num(), bound: 'topP' },
  top_k: { coerce: num(true), bound: 'topK' },
  repetition_penalty: { coerce: num(), bound: 'repetitionPenalty' },
  max_new_tokens: { coerce: num(true), bound: 'maxTokens' },
  min_new_tokens: { coerce: num(true), bound: 'minTokens' },
  num_beams: { coerce: num(true) },
  do_sample: { coerce: coerceBool },
  seed: { coerce: num(true), bound: 'seed' },
  stop: { coerce: stopList },
  adapter: { coerce: adapterName },
  adapter_scale: { coerce: num(), bound: 'adapterScale' },
  parse_special: { coerce: coerceBool },
  grammar: {
    coerce: (name, v) => {
      if (typeof v !== 'string' || v.trim() === '')
        throw new BadRequestError(`${name} must be a GBNF grammar (a string)`);
      return v;
    },
  },
  json_schema: {
    coerce: (name, v) => {
      if (v === null || typeof v !== 'object' || Array.isArray(v))
        throw new BadRequestError(`${name} must be a JSON schema object`);
      return v;
    },
  },
};

export interface ResolvedGeneration {
  params: GenerateParams;
  /** The adapter the request uses (null = base model), and its scale. */
  adapter: string | null;
}

/**
 * Validates the known keys of one layer: their types, and with `bounds` (the engine's table) their
 * ranges, under the studio's names. Unknown keys are ignored (the studio passes others, such as
 * max_length, that the original ignores too).
 */
export function coerceLayer(layer: Record<string, unknown>, bounds?: ParamBounds): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, { coerce, bound }] of Object.entries(PARAMS)) {
    if (!(key in layer) || layer[key] === undefined) continue;
    if (layer[key] === null && key !== 'adapter') continue; // Python's None: not set
    const v = coerce(key, layer[key]);
    const b = bound && bounds?.[bound];
    if (b && !withinBound(b, v as number)) throw new BadRequestError(boundMessage(b, key, layer[key]));
    if (key === 'num_beams' && (v as number) < 1)
      throw new BadRequestError(`num_beams must be an integer >= 1, got ${JSON.stringify(layer[key])}`);
    out[key] = v;
  }
  return out;
}

/**
 * request > env config > studio defaults. `defaultAdapter` is what a request that names none uses.
 */
export function resolveGeneration(
  request: Record<string, unknown>,
  env: Record<string, unknown>,
  defaultAdapter: string | null,
  bounds?: ParamBounds,
): ResolvedGeneration {
  const merged: Record<string, unknown> = {
    ...STUDIO_DEFAULTS,
    ...coerceLayer(env, bounds),
    ...coerceLayer(request, bounds),
  };
  if ((merged.num_beams as number) > 1) {
    throw new BadRequestError('num_beams > 1 (beam search) is not supported; use num_beams 1');
  }
  const greedy = merged.do_sample === false || merged.temperature === 0;
  const adapter = 'adapter' in merged ? (merged.adapter as string | null) : defaultAdapter;
  const params: GenerateParams = {
    maxTokens: merged.max_new_tokens as number,
    greedy,
    temperature: merged.temperature as number,
    topK: merged.top_k as number,
    topP: merged.top_p as number,
    repetitionPenalty: merged.repetition_penalty as number,
  };
  if (merged.seed !== undefined) params.seed = merged.seed as number;
  if (merged.stop !== undefined) params.stop = merged.stop as string[];
  if (merged.min_new_tokens !== undefined) params.minTokens = merged.min_new_tokens as number;
  if (merged.parse_special !== undefined) params.parseSpecial = merged.parse_special as boolean;
  if (merged.grammar !== undefined && merged.json_schema !== undefined) {
    throw new BadRequestError('give grammar or json_schema, not both');
  }
  if (merged.grammar !== undefined) params.grammar = merged.grammar as string;
  if (merged.json_schema !== undefined) params.grammar = grammarForJsonSchema(merged.json_schema);
  if (adapter !== null) {
    params.adapters = [
      { name: adapter, ...(merged.adapter_scale !== undefined ? { scale: merged.adapter_scale as number } : {}) },
    ];
  }
  return { params, adapter };
}
