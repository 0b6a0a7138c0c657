// Serving configuration from Fine Tuning Studio's environment (and `serve` flags, which win).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendChoice } from '../engine/index.ts';
import { coerceEnvLayer, parseGenConfigString } from './gen-config.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The embedded default: what `npm start` serves with nothing set. */
export const EMBEDDED = {
  baseModel: path.join(root, 'models/tiny-qa/base-f32.gguf'),
  adapter: path.join(root, 'models/tiny-qa/adapter-f32.gguf'),
};

export interface ServeConfig {
  baseModel: string;
  adapter: string | null;
  /** The env generation config, validated (bad keys dropped). */
  genConfig: Record<string, unknown>;
  /** What was wrong with the env (bad JSON, bad values), for the start-up log. */
  warnings: string[];
  port: number;
  host: string;
  modelsDir: string;
  apiKey: string | null;
  slots: number;
  maxQueue: number;
  contextSize: number;
  threads?: number;
  backend: BackendChoice;
  /** Merge the adapter into the weights (cached in CACHE_DIR) so its requests cost what the base costs. */
  mergeAdapter: boolean;
}

export type Overrides = Partial<Omit<ServeConfig, 'genConfig' | 'warnings'>> & { genConfigString?: string };

export class ConfigError extends Error {}

function intFrom(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`${name} must be an integer >= ${min}, got '${raw}'`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv, o: Overrides = {}): ServeConfig {
  const pick = (...names: string[]) => names.map((n) => env[n]).find((v) => v !== undefined && v !== '');
  const baseEnv = pick('FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME');
  const adapterEnv = pick('FINE_TUNING_STUDIO_ADAPTER_LOCATION', 'ADAPTER_LOCATION');
  const base = o.baseModel ?? baseEnv;
  // Nothing configured at all: the embedded tiny-qa base + adapter.
  const embedded = base === undefined && o.adapter === undefined && adapterEnv === undefined;
  const parsed = parseGenConfigString(o.genConfigString ?? pick('FINE_TUNING_STUDIO_GEN_CONFIG_STRING', 'GEN_CONFIG_STRING'));
  const { values, warnings } = coerceEnvLayer(parsed.config);
  const backend = (o.backend ?? pick('BACKEND') ?? 'auto') as BackendChoice;
  if (!['cpu', 'cuda', 'auto'].includes(backend)) throw new ConfigError(`BACKEND must be cpu, cuda or auto, got '${backend}'`);
  const threads = o.threads ?? (pick('THREADS') ? intFrom('THREADS', pick('THREADS'), 1, 1) : undefined);
  const mergeEnv = (pick('MERGE_ADAPTER') ?? 'on').toLowerCase();
  if (!['on', 'off', 'true', 'false', '1', '0'].includes(mergeEnv)) throw new ConfigError(`MERGE_ADAPTER must be on or off, got '${mergeEnv}'`);
  return {
    baseModel: base ?? EMBEDDED.baseModel,
    adapter: o.adapter !== undefined ? o.adapter : embedded ? EMBEDDED.adapter : (adapterEnv ?? null),
    genConfig: values,
    warnings: [...(parsed.warning ? [parsed.warning] : []), ...warnings],
    port: o.port ?? intFrom('PORT', pick('PORT'), 8080, 0),
    host: o.host ?? pick('HOST') ?? '127.0.0.1',
    modelsDir: path.resolve(o.modelsDir ?? pick('MODELS_DIR') ?? path.join(root, 'models')),
    apiKey: o.apiKey ?? pick('API_KEY') ?? null,
    slots: o.slots ?? intFrom('SLOTS', pick('SLOTS'), 8, 1),
    maxQueue: o.maxQueue ?? intFrom('MAX_QUEUE', pick('MAX_QUEUE'), 64, 0),
    contextSize: o.contextSize ?? intFrom('CONTEXT_SIZE', pick('CONTEXT_SIZE'), 2048, 16),
    ...(threads !== undefined ? { threads } : {}),
    backend,
    mergeAdapter: o.mergeAdapter ?? ['on', 'true', '1'].includes(mergeEnv),
  };
}
