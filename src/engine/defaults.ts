// Every default of the engine and of `serve`, in one place: the engine facade, the env config, the
// CLI's flags and their help read these (the addon keeps its own fallbacks only for direct use;
// the facade always passes every value).
export const ENGINE_DEFAULTS = Object.freeze({
  backend: 'auto' as const,
  /** Tokens of context per slot (prompt + generated); never past the model's trained context. */
  contextSize: 2048,
  slots: 4,
  maxQueue: 64,
  batchSize: 512,
  flashAttention: 'auto' as const,
  kvCacheType: 'f16' as const,
  /** Special-token text in prompts becomes control tokens, as the studio's tokenizer(prompt) does. */
  parseSpecial: true,
  /** CPU threads at most by default: llama.cpp with more threads than cores crawls. */
  maxDefaultThreads: 8,
});

/** What `serve` (and the CML script, which lowers slots for one request per replica) starts with. */
export const SERVE_DEFAULTS = Object.freeze({
  ...ENGINE_DEFAULTS,
  /** A server takes concurrent clients: twice the engine's default. */
  slots: 8,
  port: 8080,
  host: '127.0.0.1',
  drainTimeoutS: 25,
});
