// Serving configuration from Fine Tuning Studio's environment (and `serve` flags, which win).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVE_DEFAULTS as D, type BackendChoice } from '../engine/index.ts';
import { coerceLayer, parseGenConfigString } from './gen-config.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The embedded default: what `npm start` serves with nothing set. */
export const EMBEDDED = {
  baseModel: path.join(root, 'models/tiny-qa/base-f32.gguf'),
  adapter: path.join(root, 'models/tiny-qa/adapter-f32.gguf'),
};

export interface ServeConfig {
  baseModel: string;
  adapter: string | null;
  /** The env generation config, its types checked (a bad key stops the start). */
  genConfig: Record<string, unknown>;
  /** What was wrong with the env (bad JSON, bad values), for the start-up log. */
  warnings: string[];
  port: number;
  host: string;
  modelsDir: string;
  /**
   * The CML project's root, which the studio's relative locations (`data/adapters/...`) are
   * relative to: CDSW_PROJECT_DIR where set, else the working directory (a CML model's is the
   * project; the CML script starts the server there).
   */
  projectRoot: string;
  apiKey: string | null;
  slots: number;
  maxQueue: number;
  contextSize: number;
  threads?: number;
  backend: BackendChoice;
  /** Merge the adapter into the weights (cached in CACHE_DIR) so its requests cost what the base costs. */
  mergeAdapter: boolean;
  /** Validate every weight at load (CHECK_TENSORS, default on). */
  checkTensors: boolean;
  /** Special-token text in prompts becomes control tokens (PARSE_SPECIAL, default on: as the studio). */
  parseSpecial: boolean;
  /**
   * Who tokenizes text prompts (TOKENIZER): `auto`, the checkpoint's tokenizer.json through Hugging
   * Face's tokenizers when the base came from a checkpoint directory (as the studio tokenizes), else
   * llama.cpp's; `llama`, always llama.cpp's.
   */
  tokenizer: 'auto' | 'llama';
  /** A Jinja chat template file for /v1/chat/completions (CHAT_TEMPLATE), over the GGUF's own. */
  chatTemplateFile?: string;
  /** Where adapters are loaded from by name (ADAPTERS_DIR; default <project root>/data/adapters, the studio's). */
  adaptersDir: string;
  /** Adapters loaded at most, the served one included (MAX_ADAPTERS, default 8). */
  maxAdapters: number;
  /** Adapters whose requests share a decode (ADAPTER_BANK, default 8; 0: adapter sets take turns). */
  adapterBank: number;
  /**
   * One model over several GPUs (SPLIT_MODE none|layer|row, MAIN_GPU, TENSOR_SPLIT "3,1"): unset,
   * llama.cpp's defaults (layer, GPU 0, by free memory). A model that fits one GPU is faster as one
   * process per GPU (CUDA_VISIBLE_DEVICES), each a replica.
   */
  splitMode?: 'none' | 'layer' | 'row';
  mainGpu?: number;
  tensorSplit?: number[];
  /** Origins a browser may call from (CORS_ORIGINS: comma-separated, or *); empty: CORS off. */
  corsOrigins: string[];
  /** pino's level (LOG_LEVEL: fatal, error, warn, info, debug, trace, silent; default info). */
  logLevel: string;
  http: HttpLimits;
  /** On SIGTERM/SIGINT, how long requests in flight may finish before they are ended. */
  drainTimeoutS: number;
}

export type Overrides = Partial<Omit<ServeConfig, 'genConfig' | 'warnings' | 'http'>> & {
  genConfigString?: string;
  http?: Partial<HttpLimits>;
};

export class ConfigError extends Error {}

/** The HTTP server's own limits; none of them bounds how long a response may stream. */
export interface HttpLimits {
  /** A client must have sent its request headers within this (slowloris). */
  headersTimeoutS: number;
  /** ... and its whole request, body included (a Content-Length that lies). */
  bodyTimeoutS: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutS: number;
  /** Connections beyond this are refused at once. */
  maxConnections: number;
}

export const GEN_CONFIG_VAR = 'FINE_TUNING_STUDIO_GEN_CONFIG_STRING';

/**
 * The env generation config, each key of the wrong type refused by name: a config that would break
 * every request must stop the start, not pass as ready. (Its ranges, and whether its adapter and
 * max_new_tokens fit the model, are checked once the engine is loaded: see open.ts.)
 */
function envGenConfig(config: Record<string, unknown>): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  const bad: string[] = [];
  for (const [key, value] of Object.entries(config)) {
    try {
      Object.assign(values, coerceLayer({ [key]: value }));
    } catch (e) {
      bad.push((e as Error).message);
    }
  }
  if (bad.length > 0) throw new ConfigError(`generation config (${GEN_CONFIG_VAR}): ${bad.join('; ')}`);
  return values;
}

/** TENSOR_SPLIT: each GPU's share, comma-separated ("3,1"), as llama.cpp's --tensor-split takes it. */
export function tensorSplitFrom(raw: string | undefined): number[] | undefined {
  if (raw === undefined) return undefined;
  const parts = raw.split(',').map((x) => Number(x.trim()));
  if (parts.some((x) => !Number.isFinite(x) || x < 0) || !parts.some((x) => x > 0))
    throw new ConfigError(
      `TENSOR_SPLIT (--tensor-split) must be shares >= 0, one per GPU, comma-separated (e.g. 3,1), got '${raw}'`,
    );
  return parts;
}

function intFrom(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`${name} must be an integer >= ${min}, got '${raw}'`);
  return n;
}

function secondsFrom(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > 86400)
    throw new ConfigError(`${name} must be a number of seconds in (0, 86400], got '${raw}'`);
  return n;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
function logLevel(v: string): string {
  if (!LEVELS.includes(v)) throw new ConfigError(`LOG_LEVEL must be one of ${LEVELS.join(', ')}, got '${v}'`);
  return v;
}

function onOff(name: string, raw: string | undefined, fallback: boolean): boolean {
  const v = (raw ?? (fallback ? 'on' : 'off')).toLowerCase();
  if (!['on', 'off', 'true', 'false', '1', '0'].includes(v))
    throw new ConfigError(`${name} must be on or off, got '${raw}'`);
  return ['on', 'true', '1'].includes(v);
}

/** The HTTP limits' defaults: generous for any real client, short for one that holds a socket. */
export const HTTP_DEFAULTS: HttpLimits = {
  headersTimeoutS: 10,
  bodyTimeoutS: 30,
  keepAliveTimeoutS: 5,
  maxConnections: 512,
};

export function loadConfig(env: NodeJS.ProcessEnv, o: Overrides = {}): ServeConfig {
  const pick = (...names: string[]) => names.map((n) => env[n]).find((v) => v !== undefined && v !== '');
  const baseEnv = pick('FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME');
  const adapterEnv = pick('FINE_TUNING_STUDIO_ADAPTER_LOCATION', 'ADAPTER_LOCATION');
  const base = o.baseModel ?? baseEnv;
  // Nothing configured at all: the embedded tiny-qa base + adapter.
  const embedded = base === undefined && o.adapter === undefined && adapterEnv === undefined;
  const parsed = parseGenConfigString(
    o.genConfigString ?? pick('FINE_TUNING_STUDIO_GEN_CONFIG_STRING', 'GEN_CONFIG_STRING'),
  );
  const values = envGenConfig(parsed.config);
  const backend = (o.backend ?? pick('BACKEND') ?? D.backend) as BackendChoice;
  if (!['cpu', 'cuda', 'auto'].includes(backend))
    throw new ConfigError(`BACKEND must be cpu, cuda or auto, got '${backend}'`);
  const splitMode = o.splitMode ?? (pick('SPLIT_MODE') as ServeConfig['splitMode']);
  if (splitMode !== undefined && !['none', 'layer', 'row'].includes(splitMode))
    throw new ConfigError(`SPLIT_MODE (--split-mode) must be none, layer or row, got '${splitMode}'`);
  const mainGpu = o.mainGpu ?? (pick('MAIN_GPU') ? intFrom('MAIN_GPU', pick('MAIN_GPU'), 0, 0) : undefined);
  const tensorSplit = o.tensorSplit ?? tensorSplitFrom(pick('TENSOR_SPLIT'));
  const tokenizer = (o.tokenizer ?? pick('TOKENIZER') ?? 'auto') as ServeConfig['tokenizer'];
  if (!['auto', 'llama'].includes(tokenizer))
    throw new ConfigError(`TOKENIZER must be auto or llama, got '${tokenizer}'`);
  const threads = o.threads ?? (pick('THREADS') ? intFrom('THREADS', pick('THREADS'), 1, 1) : undefined);
  const h = o.http ?? {};
  return {
    baseModel: base ?? EMBEDDED.baseModel,
    adapter: o.adapter !== undefined ? o.adapter : embedded ? EMBEDDED.adapter : (adapterEnv ?? null),
    genConfig: values,
    warnings: parsed.warning ? [parsed.warning] : [],
    // A CML Application must listen on 127.0.0.1:$CDSW_APP_PORT: that port wins over PORT.
    port:
      o.port ??
      (pick('CDSW_APP_PORT')
        ? intFrom('CDSW_APP_PORT', pick('CDSW_APP_PORT'), D.port, 1)
        : intFrom('PORT', pick('PORT'), D.port, 0)),
    host: o.host ?? pick('HOST') ?? D.host,
    modelsDir: path.resolve(o.modelsDir ?? pick('MODELS_DIR') ?? path.join(root, 'models')),
    projectRoot: path.resolve(o.projectRoot ?? pick('CDSW_PROJECT_DIR') ?? process.cwd()),
    apiKey: o.apiKey ?? pick('API_KEY') ?? null,
    slots: o.slots ?? intFrom('SLOTS', pick('SLOTS'), D.slots, 1),
    maxQueue: o.maxQueue ?? intFrom('MAX_QUEUE', pick('MAX_QUEUE'), D.maxQueue, 0),
    contextSize: o.contextSize ?? intFrom('CONTEXT_SIZE', pick('CONTEXT_SIZE'), D.contextSize, 16),
    ...(threads !== undefined ? { threads } : {}),
    backend,
    tokenizer,
    adaptersDir: path.resolve(
      o.projectRoot ?? pick('CDSW_PROJECT_DIR') ?? process.cwd(),
      o.adaptersDir ?? pick('ADAPTERS_DIR') ?? path.join('data', 'adapters'),
    ),
    maxAdapters: o.maxAdapters ?? intFrom('MAX_ADAPTERS', pick('MAX_ADAPTERS'), 8, 1),
    adapterBank: o.adapterBank ?? intFrom('ADAPTER_BANK', pick('ADAPTER_BANK'), 8, 0),
    ...(splitMode !== undefined ? { splitMode } : {}),
    ...(mainGpu !== undefined ? { mainGpu } : {}),
    ...(tensorSplit !== undefined ? { tensorSplit } : {}),
    corsOrigins:
      o.corsOrigins ??
      (pick('CORS_ORIGINS') ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    logLevel: logLevel(o.logLevel ?? pick('LOG_LEVEL') ?? 'info'),
    ...((o.chatTemplateFile ?? pick('CHAT_TEMPLATE'))
      ? {
          chatTemplateFile: path.resolve(
            o.projectRoot ?? pick('CDSW_PROJECT_DIR') ?? process.cwd(),
            (o.chatTemplateFile ?? pick('CHAT_TEMPLATE'))!,
          ),
        }
      : {}),
    mergeAdapter: o.mergeAdapter ?? onOff('MERGE_ADAPTER', pick('MERGE_ADAPTER'), true),
    checkTensors: o.checkTensors ?? onOff('CHECK_TENSORS', pick('CHECK_TENSORS'), true),
    parseSpecial: o.parseSpecial ?? onOff('PARSE_SPECIAL', pick('PARSE_SPECIAL'), D.parseSpecial),
    http: {
      headersTimeoutS:
        h.headersTimeoutS ?? secondsFrom('HEADERS_TIMEOUT', pick('HEADERS_TIMEOUT'), HTTP_DEFAULTS.headersTimeoutS),
      bodyTimeoutS: h.bodyTimeoutS ?? secondsFrom('BODY_TIMEOUT', pick('BODY_TIMEOUT'), HTTP_DEFAULTS.bodyTimeoutS),
      keepAliveTimeoutS:
        h.keepAliveTimeoutS ??
        secondsFrom('KEEP_ALIVE_TIMEOUT', pick('KEEP_ALIVE_TIMEOUT'), HTTP_DEFAULTS.keepAliveTimeoutS),
      maxConnections:
        h.maxConnections ?? intFrom('MAX_CONNECTIONS', pick('MAX_CONNECTIONS'), HTTP_DEFAULTS.maxConnections, 1),
    },
    drainTimeoutS: o.drainTimeoutS ?? secondsFrom('DRAIN_TIMEOUT', pick('DRAIN_TIMEOUT'), D.drainTimeoutS),
  };
}
