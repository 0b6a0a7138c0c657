// The typed facade over the native engine: load a model, register adapters, generate.
import { cpuBudget } from './cpus.ts';
import { resolveBackend, type BackendChoice, type ResolvedBackend } from './backend.ts';
import type { EngineClient, EngineHealth, ServedAdapter } from './client.ts';
import { AbortedError, AdapterError, EngineClosedError, InvalidParamsError, fromNative } from './errors.ts';
import { Generation } from './generation.ts';
import type {
  NativeAdapterInfo,
  NativeEngine,
  NativeEngineOptions,
  NativeEvent,
  NativeModelInfo,
  NativeRequestParams,
  NativeStats,
} from './native.ts';
import { ENGINE_DEFAULTS as D } from './defaults.ts';
import { boundMessage, withinBound, type ParamBounds } from './params.ts';

/** The addon's options (their defaults in defaults.ts), and what the facade adds around them. */
export interface EngineOptions extends NativeEngineOptions {
  backend?: BackendChoice;
  /**
   * The adapter already merged into modelPath (mergeAdapter) at `scale`. It is registered under
   * `name` too, so requests for it at that scale run on the merged weights alone, and any other
   * scale, or the base model, applies it unmerged at the difference.
   */
  mergedAdapter?: { name: string; path: string; scale: number };
  /** What a request that does not say gets for `parseSpecial` (default true: as the studio tokenizes). */
  parseSpecial?: boolean;
  onProgress?: (fraction: number) => void;
}

export type GenerateParams = Omit<NativeRequestParams, 'addSpecial'> & {
  /** Add the model's BOS (when its GGUF says so) to a text prompt. Default true. */
  addSpecial?: boolean;
};

export interface LoadedEngine {
  backend: ResolvedBackend;
  model: NativeModelInfo;
}

function defaultThreads(): number {
  return Math.min(cpuBudget().cpus, D.maxDefaultThreads);
}

export class Engine implements EngineClient {
  private readonly live = new Map<number, Generation>();
  private closed = false;
  private merged: { name: string; scale: number; defaultScale: number } | null = null;
  private parseSpecial: boolean = D.parseSpecial;

  /** The bounds of every numeric request parameter, as the native checks enforce them. */
  readonly bounds: ParamBounds;

  private constructor(
    private readonly native: NativeEngine,
    readonly backend: ResolvedBackend,
    readonly model: NativeModelInfo,
  ) {
    this.bounds = backend.addon.paramBounds();
  }

  /** Loads the model; rejects with ModelLoadError (or BackendError) carrying llama.cpp's reason. */
  static async load(opts: EngineOptions): Promise<Engine> {
    const backend = resolveBackend(opts.backend ?? D.backend);
    const threads = opts.threads ?? defaultThreads(); // the cgroup files read once
    let self: Engine | undefined;
    let native: NativeEngine;
    try {
      // Bad options throw here, before anything loads.
      native = new backend.addon.Engine(
        {
          modelPath: opts.modelPath,
          gpuLayers: opts.gpuLayers ?? (backend.hasGpu ? -1 : 0),
          threads,
          samplingThreads: opts.samplingThreads ?? (backend.hasGpu ? threads : 1),
          contextSize: opts.contextSize ?? D.contextSize,
          ...(opts.promptCache !== undefined ? { promptCache: opts.promptCache } : {}),
          slots: opts.slots ?? D.slots,
          maxQueue: opts.maxQueue ?? D.maxQueue,
          batchSize: opts.batchSize ?? D.batchSize,
          ...(opts.fillGap !== undefined ? { fillGap: opts.fillGap } : {}),
          flashAttention: opts.flashAttention ?? D.flashAttention,
          kvCacheType: opts.kvCacheType ?? D.kvCacheType,
          ...(opts.checkTensors !== undefined ? { checkTensors: opts.checkTensors } : {}),
          ...(opts.adapterBank !== undefined ? { adapterBank: opts.adapterBank } : {}),
          ...(opts.adapterBankLayout !== undefined ? { adapterBankLayout: opts.adapterBankLayout } : {}),
          ...(opts.splitMode !== undefined ? { splitMode: opts.splitMode } : {}),
          ...(opts.mainGpu !== undefined ? { mainGpu: opts.mainGpu } : {}),
          ...(opts.tensorSplit !== undefined ? { tensorSplit: opts.tensorSplit } : {}),
        },
        (events) => self?.dispatch(events),
      );
    } catch (err) {
      throw fromNative(err);
    }
    try {
      await native.load(opts.onProgress);
    } catch (err) {
      throw fromNative(err);
    }
    self = new Engine(native, backend, native.info());
    self.parseSpecial = opts.parseSpecial ?? D.parseSpecial;
    const m = opts.mergedAdapter;
    if (m) {
      try {
        await self.loadAdapter(m.name, m.path, m.scale);
      } catch (err) {
        await self.close();
        throw err;
      }
      self.merged = { name: m.name, scale: m.scale, defaultScale: m.scale };
    }
    return self;
  }

  private dispatch(events: NativeEvent[]): void {
    for (const ev of events) {
      const g = this.live.get(ev.id);
      if (!g) continue;
      if (ev.type !== 'token') this.live.delete(ev.id);
      g.handle(ev);
    }
  }

  private call<T>(fn: () => T): T {
    if (this.closed) throw new EngineClosedError('the engine is closed', 'ENGINE_CLOSED');
    try {
      return fn();
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** The ids a text prompt of generate() becomes (parseSpecial: the engine's default unless given). */
  tokenize(text: string, addSpecial = true, parseSpecial = this.parseSpecial): number[] {
    return this.call(() => this.native.tokenize(text, addSpecial, parseSpecial));
  }

  detokenize(ids: number[]): string {
    return this.call(() => this.native.detokenize(ids));
  }

  tokenPieces(ids: number[]): string[] {
    return this.call(() => this.native.tokenPieces(ids));
  }

  /** Registers (or replaces) a GGUF LoRA under a name; `scale` is its default scale. */
  async loadAdapter(name: string, path: string, scale = 1): Promise<NativeAdapterInfo> {
    this.refuseMerged(name, 'replaced');
    this.checkScale(name, scale);
    try {
      return await this.call(() => this.native.loadAdapter(name, path, scale));
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** Running requests keep the adapter until they end. Returns false if no such adapter. */
  unloadAdapter(name: string): boolean {
    this.refuseMerged(name, 'unloaded');
    return this.call(() => this.native.unloadAdapter(name));
  }

  /** An adapter's default scale is held to the bounds table as a request's is. */
  private checkScale(name: string, scale: number): void {
    const bound = this.bounds.adapterScale;
    if (typeof scale !== 'number' || !withinBound(bound, scale)) {
      throw new InvalidParamsError(boundMessage(bound, `adapter '${name}' scale`, scale), 'INVALID_PARAMS');
    }
  }

  setAdapterScale(name: string, scale: number): boolean {
    this.checkScale(name, scale);
    const ok = this.call(() => this.native.setAdapterScale(name, scale));
    if (ok && this.merged?.name === name) this.merged.defaultScale = scale;
    return ok;
  }

  /** The registered adapters; `merged` marks the one in the model's weights. */
  adapters(): ServedAdapter[] {
    return this.call(() => this.native.adapters()).map((a) => ({ ...a, merged: a.name === this.merged?.name }));
  }

  private refuseMerged(name: string, what: string): void {
    if (this.merged?.name === name) {
      throw new AdapterError(
        `adapter '${name}' is merged into the model's weights and cannot be ${what}; load the base model without it`,
        'ADAPTER_MERGED',
      );
    }
  }

  /**
   * What the native engine applies for a request's adapters when one adapter is merged: that
   * adapter at (requested - merged) scale, which is nothing for the merged scale itself and its
   * negative for a request without it (the base model).
   */
  private unmergedAdapters(list: GenerateParams['adapters']): GenerateParams['adapters'] {
    const m = this.merged;
    if (!m || (list !== undefined && !Array.isArray(list))) return list; // the addon says what is wrong
    const mine = (list ?? []).filter((a) => a?.name === m.name);
    if (mine.some((a) => a.scale !== undefined && typeof a.scale !== 'number')) return list;
    const out = (list ?? []).filter((a) => a?.name !== m.name);
    const wanted = mine.reduce((s, a) => s + (a.scale ?? m.defaultScale), 0);
    if (wanted !== m.scale) out.push({ name: m.name, scale: wanted - m.scale });
    return out;
  }

  stats(): NativeStats {
    return this.native.stats();
  }

  health(): EngineHealth {
    const s = this.native.stats();
    return {
      backend: this.backend.name,
      busySlots: s.busySlots,
      queued: s.queued,
      adapterMerged: this.merged !== null,
      adapterBank: this.model.adapterBank.enabled,
    };
  }

  /**
   * Starts a request. Bad parameters, an unknown adapter, context overflow and a full queue throw
   * here, synchronously; the returned Generation streams chunks and settles `result`.
   */
  generate(prompt: string | number[], params: GenerateParams = {}, opts: { signal?: AbortSignal } = {}): Generation {
    const signal = opts.signal;
    if (signal?.aborted) throw new AbortedError('the request was aborted before it started', 'ABORTED');
    const native = this.toNative(params);
    const id = this.call(() => this.native.submit(prompt, native));
    const g = new Generation(id, (i) => this.native.cancel(i));
    this.live.set(id, g);
    if (signal) {
      const onAbort = () => g.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      g.result.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
    }
    return g;
  }

  /** Throws what generate() would throw for this prompt and these parameters, and runs nothing. */
  validate(prompt: string | number[], params: GenerateParams = {}): void {
    const native = this.toNative(params);
    this.call(() => this.native.validate(prompt, native));
  }

  private toNative(params: GenerateParams): GenerateParams {
    // The native check of a merged adapter sees only the difference from its merged scale, so the
    // scales asked for are held to the bound here.
    const bound = this.bounds.adapterScale;
    for (const a of Array.isArray(params.adapters) ? params.adapters : []) {
      if (typeof a?.scale === 'number' && !withinBound(bound, a.scale)) {
        throw new InvalidParamsError(boundMessage(bound, `adapter '${a.name}' scale`, a.scale), 'INVALID_PARAMS');
      }
    }
    const out = params.parseSpecial === undefined ? { ...params, parseSpecial: this.parseSpecial } : params;
    return this.merged ? { ...out, adapters: this.unmergedAdapters(params.adapters) } : out;
  }

  /** Ends every request (they fail with EngineClosedError) and frees the model. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.native.close();
  }
}
