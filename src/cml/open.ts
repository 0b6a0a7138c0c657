// From configuration to a ready Predictor: locate the files, load the model and the adapter.
// Shared by `serve` and the one-shot `predict` command.
import { rmSync, statfsSync, statSync } from 'node:fs';
import path from 'node:path';
import { cpuBudget, Engine, ModelLoadError, mergeAdapter } from '../engine/index.ts';
import { cacheDir, cached, inputKey } from '../intake/cache.ts';
import { ConfigError, GEN_CONFIG_VAR, type ServeConfig } from './config.ts';
import { locateAdapter, locateBaseModel } from './locate.ts';
import { loadHfTokenizer } from '../intake/hf-tokenizer.ts';
import { AdapterLibrary } from './adapters.ts';
import { type ChatFormat, chatFormat } from './chat.ts';
import { DEFAULT_ADAPTER, Predictor } from './predict.ts';

export interface OpenEvents {
  /** Which rule found each file, and anything else worth a log line. */
  info?: (fields: Record<string, unknown>, message: string) => void;
  /** Something did not go as configured but serving goes on (an adapter that could not be merged). */
  warn?: (fields: Record<string, unknown>, message: string) => void;
  onProgress?: (fraction: number) => void;
  /** Bytes fetched so far of a base model downloaded from the Hub. */
  onDownload?: (done: number, total: number) => void;
}

export async function openPredictor(cfg: ServeConfig, ev: OpenEvents = {}): Promise<Predictor> {
  const base = await locateBaseModel(cfg.baseModel, cfg.modelsDir, cacheDir(), cfg.projectRoot, ev.onDownload);
  ev.info?.({ path: base.path, rule: base.rule, from: cfg.baseModel }, 'base model located');
  const adapter = cfg.adapter ? await locateAdapter(cfg.adapter, base.path, cacheDir(), cfg.projectRoot) : null;
  if (adapter) ev.info?.({ path: adapter.path, rule: adapter.rule, from: cfg.adapter }, 'adapter located');
  else ev.info?.({}, 'no adapter configured: serving the base model');

  const load = (modelPath: string, merged: boolean) =>
    Engine.load({
      modelPath,
      ...(merged && adapter ? { mergedAdapter: { name: DEFAULT_ADAPTER, path: adapter.path, scale: 1 } } : {}),
      backend: cfg.backend,
      slots: cfg.slots,
      maxQueue: cfg.maxQueue,
      contextSize: cfg.contextSize,
      checkTensors: cfg.checkTensors,
      parseSpecial: cfg.parseSpecial,
      adapterBank: cfg.adapterBank,
      ...(cfg.splitMode !== undefined ? { splitMode: cfg.splitMode } : {}),
      ...(cfg.mainGpu !== undefined ? { mainGpu: cfg.mainGpu } : {}),
      ...(cfg.tensorSplit !== undefined ? { tensorSplit: cfg.tensorSplit } : {}),
      ...(cfg.threads !== undefined ? { threads: cfg.threads } : {}),
      ...(ev.onProgress ? { onProgress: ev.onProgress } : {}),
    });
  let merged = adapter && cfg.mergeAdapter ? await mergedModel(base.path, adapter.path, cfg, ev) : null;
  let engine: Engine;
  try {
    engine = await load(merged ?? base.path, merged !== null);
  } catch (e) {
    if (merged === null || !(e instanceof ModelLoadError)) throw e;
    // A cached merged model that does not load (truncated, corrupted on disk): made again once,
    // and if that does not load either, the adapter is served unmerged.
    ev.warn?.({ path: merged, error: e.message }, 'the cached merged model does not load: merging again');
    rmSync(merged, { force: true });
    merged = await mergedModel(base.path, adapter!.path, cfg, ev);
    try {
      engine = await load(merged ?? base.path, merged !== null);
    } catch (again) {
      if (merged === null || !(again instanceof ModelLoadError)) throw again;
      ev.warn?.(
        { path: merged, error: again.message },
        'the merged model does not load: serving the adapter unmerged (slower per token)',
      );
      merged = null;
      engine = await load(base.path, false);
    }
  }
  const cpus = cpuBudget();
  ev.info?.(
    {
      backend: engine.backend.name,
      reason: engine.backend.reason,
      devices: engine.backend.devices.map((d) => d.description),
      cpus: cpus.cpus,
      cores: cpus.cores,
      cpuQuota: cpus.quota,
    },
    'backend',
  );
  if (engine.model.threads > cpus.cpus) {
    ev.warn?.(
      { threads: engine.model.threads, cpus: cpus.cpus, quotaFile: cpus.quotaFile },
      `${engine.model.threads} threads on ${cpus.cpus} CPU${cpus.cpus > 1 ? 's' : ''}: llama.cpp's threads spin at every step, and more of them than CPUs stall each other (a cgroup quota throttles them all)`,
    );
  }
  const { chatTemplate, ...shown } = engine.model;
  ev.info?.(
    { ...shown, chatTemplate: chatTemplate === null ? null : `${chatTemplate.length} characters` },
    'model loaded',
  );
  const m = engine.model;
  if (m.contextPerSlot < m.contextRequested) {
    ev.warn?.(
      { requested: m.contextRequested, trainContext: m.trainContext },
      `context per slot capped at ${m.contextPerSlot} tokens, the model's trained context`,
    );
  }
  try {
    if (adapter && !merged) await engine.loadAdapter(DEFAULT_ADAPTER, adapter.path);
  } catch (e) {
    await engine.close();
    throw e;
  }
  const tokenizer = cfg.tokenizer === 'auto' && base.checkpoint ? await loadHfTokenizer(base.checkpoint) : null;
  ev.info?.(
    { tokenizer: tokenizer ? tokenizer.file : 'llama.cpp' },
    tokenizer
      ? "text prompts are tokenized by the checkpoint's tokenizer.json (Hugging Face tokenizers), as the studio does"
      : "text prompts are tokenized by llama.cpp's tokenizer",
  );
  const bank = engine.model.adapterBank;
  if (bank.enabled) {
    ev.info?.({ adapterBank: bank }, `adapter bank on: up to ${bank.size} adapters mixed in one decode`);
  } else if (cfg.adapterBank > 0 && engine.model.slots > 1) {
    // Asked for but not working here: still correct (turns), only slower with mixed adapters.
    ev.warn?.({ adapterBank: bank }, `adapter bank off (${bank.reason}): requests of different adapters take turns`);
  }
  let chat: ChatFormat | null;
  try {
    chat = chatFormat(engine.model, cfg.chatTemplateFile);
  } catch (e) {
    await engine.close();
    throw new ConfigError(`chat template (CHAT_TEMPLATE ${cfg.chatTemplateFile}): ${(e as Error).message}`);
  }
  ev.info?.(
    { chatTemplate: chat?.source ?? null },
    chat ? 'chat template loaded' : 'no chat template: /v1/chat/completions answers 400',
  );
  const library = new AdapterLibrary(
    engine,
    cfg.adaptersDir,
    cfg.maxAdapters,
    base.path,
    adapter ? DEFAULT_ADAPTER : null,
  );
  const predictor = new Predictor(engine, cfg.genConfig, adapter ? DEFAULT_ADAPTER : null, tokenizer, chat, library);
  try {
    predictor.checkGenConfig();
  } catch (e) {
    await engine.close();
    throw new ConfigError(`generation config (${GEN_CONFIG_VAR}) cannot serve a request: ${(e as Error).message}`);
  }
  return predictor;
}

/**
 * The base with the adapter merged at scale 1, from the cache or made now; null (and a warning)
 * when it cannot be merged, and the adapter is then served unmerged.
 */
async function mergedModel(
  basePath: string,
  adapterPath: string,
  cfg: ServeConfig,
  ev: OpenEvents,
): Promise<string | null> {
  try {
    const key = inputKey([basePath, adapterPath], { merge: { scale: 1 } });
    const t0 = performance.now();
    const made = await cached(cacheDir(), `merged-${key}.gguf`, async (out) => {
      // A merged model is a full copy of the base: never fill the disk for it.
      const { bavail, bsize } = statfsSync(path.dirname(out));
      const need = statSync(basePath).size * 1.05;
      if (bavail * bsize < need)
        throw new Error(
          `${path.dirname(out)} has ${Math.round((bavail * bsize) / 2 ** 20)} MiB free; the merged model needs ${Math.round(need / 2 ** 20)} MiB`,
        );
      ev.info?.({ out }, 'merging the adapter into the base weights (once; cached)');
      const info = await mergeAdapter({
        modelPath: basePath,
        adapterPath,
        out,
        scale: 1,
        backend: cfg.backend,
        threads: cfg.threads ?? cpuBudget().cpus,
      });
      ev.info?.({ ...info, ms: Math.round(performance.now() - t0) }, 'adapter merged');
    });
    ev.info?.({ path: made.path, reused: made.reused }, 'serving the adapter merged into the weights');
    return made.path;
  } catch (e) {
    ev.warn?.(
      { error: (e as Error).message },
      'the adapter could not be merged: serving it unmerged (slower per token)',
    );
    return null;
  }
}
