// Adapters beyond the served one, managed while the server runs. They come by name from ADAPTERS_DIR
// (the studio keeps its adapters in <project>/data/adapters/<name>: a PEFT folder, converted through
// the intake, or a GGUF LoRA), over HTTP or on a request's first use of the name (as LoRAX loads
// them), and at most MAX_ADAPTERS stay loaded: the least recently used goes first. A request that is
// running keeps its adapter until it ends (the engine holds it), so an unload never cuts one short.
import path from 'node:path';
import type { Engine, ServedAdapter } from '../engine/index.ts';
import { cacheDir } from '../intake/cache.ts';
import { LocateError, locateAdapter } from './locate.ts';

/** A client's mistake with a status of its own (the server maps `status` to the HTTP answer). */
export class AdapterRequestError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class AdapterLibrary {
  private readonly lastUse = new Map<string, number>();
  private clock = 0;
  private readonly loading = new Map<string, Promise<ServedAdapter>>();

  constructor(
    private readonly engine: Engine,
    /** Where adapters are found by name; null: none are loaded by name. */
    readonly dir: string | null,
    /** Adapters loaded at most, the served one included. */
    readonly max: number,
    /** The base GGUF (a PEFT folder converts against it). */
    private readonly baseGguf: string,
    /** The adapter served by default: never evicted. */
    private readonly pinned: string | null,
  ) {}

  list(): ServedAdapter[] {
    return this.engine.adapters();
  }

  has(name: string): boolean {
    return this.engine.adapters().some((a) => a.name === name);
  }

  /** Marks a name as used now (for the least-recently-used order). */
  touch(name: string): void {
    this.lastUse.set(name, ++this.clock);
  }

  /**
   * Loads (or replaces) `name` from `location` inside ADAPTERS_DIR (default: the folder of that name).
   * Concurrent loads of one name share one load.
   */
  load(name: string, location?: string, scale?: number): Promise<ServedAdapter> {
    if (!NAME.test(name) || name === 'base') {
      throw new AdapterRequestError(
        400,
        `adapter name must be 1-64 of A-Z a-z 0-9 . _ - (and not 'base'), got ${JSON.stringify(name)}`,
      );
    }
    if (!this.dir) throw new AdapterRequestError(400, 'no ADAPTERS_DIR is set: adapters cannot be loaded by name');
    const dir = this.dir;
    const target = path.resolve(dir, location ?? name);
    if (target !== dir && !target.startsWith(dir + path.sep)) {
      throw new AdapterRequestError(400, `adapter path ${JSON.stringify(location)} is outside ADAPTERS_DIR`);
    }
    const pending = this.loading.get(name);
    if (pending && location === undefined && scale === undefined) return pending;
    const run = (async () => {
      let file: string;
      try {
        file = (await locateAdapter(path.relative(dir, target), this.baseGguf, cacheDir(), dir)).path;
      } catch (e) {
        if (e instanceof LocateError) throw new AdapterRequestError(404, `adapter '${name}': ${e.message}`);
        throw e;
      }
      const info = await this.engine.loadAdapter(name, file, scale ?? 1);
      this.touch(name);
      await this.evict();
      return { ...info, merged: false };
    })();
    this.loading.set(name, run);
    run.finally(() => this.loading.delete(name)).catch(() => {});
    return run;
  }

  /** The adapter by name, loading it from ADAPTERS_DIR on first use; false when there is none. */
  async ensure(name: string): Promise<boolean> {
    if (this.has(name)) {
      this.touch(name);
      return true;
    }
    if (!this.dir || !NAME.test(name) || name === 'base') return false;
    try {
      await this.load(name);
      return true;
    } catch (e) {
      if (e instanceof AdapterRequestError && e.status === 404) return false;
      throw e;
    }
  }

  unload(name: string): void {
    if (name === this.pinned)
      throw new AdapterRequestError(409, `adapter '${name}' is the one served by default: it stays loaded`);
    if (!this.has(name)) throw new AdapterRequestError(404, `no adapter named '${name}' is loaded`);
    this.engine.unloadAdapter(name);
    this.lastUse.delete(name);
  }

  setScale(name: string, scale: number): void {
    if (!this.has(name)) throw new AdapterRequestError(404, `no adapter named '${name}' is loaded`);
    this.engine.setAdapterScale(name, scale);
  }

  /** Unloads the least recently used adapters past `max` (never the pinned one). */
  private async evict(): Promise<void> {
    const loaded = this.engine.adapters().filter((a) => a.name !== this.pinned && !a.merged);
    const room = this.max - (this.pinned ? 1 : 0);
    if (loaded.length <= room) return;
    const byAge = loaded.sort((a, b) => (this.lastUse.get(a.name) ?? 0) - (this.lastUse.get(b.name) ?? 0));
    for (const a of byAge.slice(0, loaded.length - room)) {
      this.engine.unloadAdapter(a.name);
      this.lastUse.delete(a.name);
    }
  }
}
