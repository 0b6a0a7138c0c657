// The one description of what the C++ addon (native/) exposes, and the one place that loads it.
// Everything else depends on these types, never on the addon's shape by guesswork.
import { createRequire } from 'node:module';

export interface NativeEngineOptions {
  modelPath: string;
  /** Layers on the GPU: all (-1) by default when a GPU backend is in use, else 0. */
  gpuLayers?: number;
  /** CPU threads; defaults to the CPUs this process may use (cores, and a cgroup CPU quota: cpus.ts), at most 8. */
  threads?: number;
  /**
   * Threads that sample concurrent streams side by side after each decode. Default: `threads` on a
   * GPU; 1 on the CPU, where llama.cpp's decode threads poll for their next graph for a while and
   * would compete with sampling threads for the same cores.
   */
  samplingThreads?: number;
  /**
   * Keep each slot's KV cells after its request, so that a next prompt starting with the same
   * tokens (with the same adapters) prefills only the rest. Default true.
   */
  promptCache?: boolean;
  /** Tokens of context per slot (prompt + generated). */
  contextSize?: number;
  /** Concurrent sequences decoded together. */
  slots?: number;
  /** Requests allowed to wait beyond the free slots. */
  maxQueue?: number;
  batchSize?: number;
  /**
   * Idle slots (or slots of other adapter sets) between busy ones split a step into one pass over
   * the weights per run of consecutive slots; runs of up to this many get a throwaway token each
   * instead. Default (-1) 32 on a GPU, where a pass costs far more than a token, 2 on the CPU.
   */
  fillGap?: number;
  flashAttention?: 'auto' | 'on' | 'off';
  /** KV cache precision: f16 (llama.cpp's default), f32 (exact, twice the memory), q8_0. */
  kvCacheType?: 'f16' | 'f32' | 'q8_0';
  /**
   * llama.cpp checks every weight for NaN and inf while loading, so a corrupt file fails its load
   * instead of its first request. Default true; off saves a pass over the weights at start-up.
   */
  checkTensors?: boolean;
  /**
   * Adapters whose requests share one decode, each token with its own adapters and scales (the
   * adapter bank, native/adapter_bank.h). Default 8; 0 makes requests of different adapter sets
   * take turns, as llama.cpp alone does. A check at load decides whether it works here (info().adapterBank).
   */
  adapterBank?: number;
  /**
   * How the bank computes: 'stacked' (the adapters' A and B stacked along the rank: four kernels per
   * weight however many mix, for a GPU), 'gathered' (each adapter the batch uses on its own
   * tensors: a token's rows the same whichever others share its batch, as the CPU promises; our
   * CPU kernel, so weights on a GPU refuse it and the bank is off, info().adapterBank.reason says
   * why), or 'auto' (the default: stacked for weights on a GPU, per adapter in host memory).
   */
  adapterBankLayout?: 'auto' | 'stacked' | 'gathered';
  /**
   * One model over several GPUs of one machine (llama.cpp's split): 'layer' (the default: layers
   * and their KV cache spread over the GPUs), 'row' (each matrix split, tensor parallel where the
   * backend can), 'none' (all on mainGpu). tensorSplit: each GPU's share (default: by free memory).
   */
  splitMode?: 'none' | 'layer' | 'row';
  mainGpu?: number;
  tensorSplit?: number[];
}

/** One row of the native bounds table (native/params.cpp): what every layer checks a value against. */
export interface ParamBound {
  min: number;
  max: number;
  minExclusive: boolean;
  maxExclusive: boolean;
  integer: boolean;
  /** Positive values below this are refused; 0 stays allowed (0 when there is no such gap). */
  positiveMin: number;
  /** The rule in words, as the native messages say it: "a number in (0, 1]". */
  rule: string;
}

export type ParamKey =
  | 'maxTokens'
  | 'minTokens'
  | 'temperature'
  | 'topK'
  | 'topP'
  | 'minP'
  | 'repetitionPenalty'
  | 'presencePenalty'
  | 'frequencyPenalty'
  | 'logprobs'
  | 'seed'
  | 'logitBias'
  | 'adapterScale';

export interface NativeRequestParams {
  maxTokens?: number;
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  seed?: number;
  stop?: string[];
  logprobs?: number;
  /** End-of-generation tokens are masked until this many tokens were generated (HF min_new_tokens). */
  minTokens?: number;
  /** Never stop at end-of-generation tokens (fixed-length runs, benchmarks): minTokens = maxTokens. */
  ignoreEos?: boolean;
  /** token id -> bias added to its logit before sampling (OpenAI's logit_bias). */
  logitBias?: Record<number, number>;
  adapters?: { name: string; scale?: number }[];
  addSpecial?: boolean;
  /**
   * Special-token text in a text prompt (`<|im_start|>`, `</s>`) becomes its control token, as a
   * Hugging Face tokenizer(prompt) does. Default true.
   */
  parseSpecial?: boolean;
  /** A GBNF grammar (root rule `root`): every token generated is one it allows (llama.cpp's grammar sampler). */
  grammar?: string;
}

export interface TopLogprob {
  token: number;
  logprob: number;
}

export type NativeEvent =
  | { id: number; type: 'token'; text: string; token: number; logprob?: number; top?: TopLogprob[] }
  | {
      id: number;
      type: 'done';
      text: string;
      stopReason: 'eos' | 'length' | 'stop' | 'cancelled';
      stopString?: string;
      promptTokens: number;
      /** Prompt tokens whose KV cells were reused from the slot's previous request. */
      cachedTokens: number;
      generatedTokens: number;
      prefillMs: number;
      ttftMs: number;
      decodeTokensPerSecond: number;
      totalMs: number;
    }
  | { id: number; type: 'error'; code: string; message: string };

export interface NativeModelInfo {
  description: string;
  architecture?: string;
  parameters: number;
  sizeBytes: number;
  trainContext: number;
  layers: number;
  vocabSize: number;
  bos: number;
  eos: number;
  addBos: boolean;
  /** The GGUF's tokenizer.chat_template, or null. */
  chatTemplate: string | null;
  /** The text of the BOS and EOS tokens (what templates call bos_token / eos_token), or null. */
  bosText: string | null;
  eosText: string | null;
  contextPerSlot: number;
  /** contextSize as asked; contextPerSlot is less when that was past trainContext. */
  contextRequested: number;
  slots: number;
  maxQueue: number;
  threads: number;
  samplingThreads: number;
  fillGap: number;
  gpuLayers: number;
  /** The split as the load handed it to llama.cpp (tensorSplit: llama_max_devices() values, or empty). */
  splitMode: 'none' | 'layer' | 'row';
  mainGpu: number;
  tensorSplit: number[];
  /**
   * The adapter bank: enabled when the check at load passed (two made-up adapters decoded mixed
   * in one batch gave each one's logits alone, within 2% of their effect), with its size; else
   * the reason, and adapter sets take turns. checkError/checkEffect: that check's largest logit
   * difference, and the smallest largest change either adapter made.
   */
  adapterBank: {
    enabled: boolean;
    size: number;
    layout: 'auto' | 'stacked' | 'gathered';
    reason: string | null;
    checkError: number;
    checkEffect: number;
  };
}

export interface NativeAdapterInfo {
  name: string;
  path: string;
  alpha: number;
  scale: number;
}

export interface NativeEngine {
  load(onProgress?: (fraction: number) => void): Promise<void>;
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial?: boolean, parseSpecial?: boolean): number[];
  detokenize(ids: number[], renderSpecial?: boolean): string;
  /** Each token's own text (leading space kept, special tokens rendered). */
  tokenPieces(ids: number[]): string[];
  loadAdapter(name: string, path: string, scale?: number): Promise<NativeAdapterInfo>;
  unloadAdapter(name: string): boolean;
  setAdapterScale(name: string, scale: number): boolean;
  adapters(): NativeAdapterInfo[];
  submit(prompt: string | number[], params: NativeRequestParams): number;
  /** Throws what submit() would for this prompt and these parameters; runs nothing. */
  validate(prompt: string | number[], params: NativeRequestParams): void;
  cancel(id: number): boolean;
  stats(): NativeStats;
  close(): Promise<void>;
}

export interface NativeDevice {
  name: string;
  description: string;
  type: 'cpu' | 'gpu' | 'igpu' | 'accel';
  memoryFree: number;
  memoryTotal: number;
}

export interface NativeAddon {
  Engine: new (options: NativeEngineOptions, onEvents: (events: NativeEvent[]) => void) => NativeEngine;
  devices(): NativeDevice[];
  /** Loads the ggml backend libraries in dir; returns llama.cpp's warnings about any that failed. */
  loadBackends(dir: string): string;
  /** Loads one backend library; returns llama.cpp's warnings, empty when it loaded. */
  loadBackend(path: string): string;
  /** false for a build that links its backends statically (the CUDA build). */
  dynamicBackends: boolean;
  /** Writes base + scale·alpha/rank·B·A as a new GGUF at `out` (see native/merge.h). */
  paramBounds(): Record<ParamKey, ParamBound>;
  /** Every error code the addon reports (native/error_codes.h). */
  errorCodes(): string[];
  mergeLora(
    options: { base: string; adapter: string; out: string; scale?: number; threads?: number },
    onProgress?: (fraction: number) => void,
  ): Promise<NativeMergeInfo>;
  /** llama.cpp's quantizer (llama_model_quantize): `input` (f32/f16/bf16 GGUF) to `output` at `type`. */
  quantizeModel(
    options: { input: string; output: string; type: string; threads?: number },
    onProgress?: (fraction: number) => void,
  ): Promise<{ tensors: number }>;
}

export interface NativeMergeInfo {
  tensors: number;
  /** Tensors the adapter changed. */
  merged: number;
  /** Merged tensors stored as F16 because their type needs an importance matrix to re-quantize. */
  widened: number;
  effectiveScale: number;
}

const require = createRequire(import.meta.url);

export function loadAddon(file: string): NativeAddon {
  return require(file) as NativeAddon;
}

export interface NativeStats {
  busySlots: number;
  queued: number;
  inFlight: number;
  /** Slots whose KV cells a non-finite request may have poisoned, out of use until they are scrubbed. */
  quarantinedSlots: number;
  /**
   * The scheduler thread's time since load, summed (µs): decode (llama_decode and the wait for its
   * results), sample, emit (text and events), and loop (every working iteration, up to handing its
   * events to JS: the rest is admitting requests and building batches). Also counted: fillerTokens,
   * throwaway tokens given to idle slots between busy ones so that a step decodes in one pass, and
   * adapterSwitches, changes of the context's adapter set, and switchCostUs, the last change's
   * measured cost (its turn's first decodes over the usual), which sets how long turns last; and
   * nonFinite, requests failed because their logits became NaN or infinite, and kvScrubs, clears of
   * the KV cells such requests may have left behind; and bankMembers and bankBytes, the adapter
   * bank's members now and the memory their stacked weights take; and graphsReused, decodes that
   * reused the previous decode's graph (llama.cpp's count; each other one built its graph). Absent
   * once closed.
   */
  profile?: {
    steps: number;
    decodeUs: number;
    sampleUs: number;
    emitUs: number;
    loopUs: number;
    fillerTokens: number;
    adapterSwitches: number;
    switchCostUs: number;
    nonFinite: number;
    kvScrubs: number;
    bankMembers: number;
    bankBytes: number;
    graphsReused: number;
  };
}
