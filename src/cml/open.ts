// From configuration to a ready Predictor: locate the files, load the model and the adapter.
// Shared by `serve` and the one-shot `predict` command.
import { Engine } from '../engine/index.ts';
import type { ServeConfig } from './config.ts';
import { locateAdapter, locateBaseModel } from './locate.ts';
import { DEFAULT_ADAPTER, Predictor } from './predict.ts';

export interface OpenEvents {
  /** Which rule found each file, and anything else worth a log line. */
  info?: (fields: Record<string, unknown>, message: string) => void;
  onProgress?: (fraction: number) => void;
}

export async function openPredictor(cfg: ServeConfig, ev: OpenEvents = {}): Promise<Predictor> {
  const base = await locateBaseModel(cfg.baseModel, cfg.modelsDir);
  ev.info?.({ path: base.path, rule: base.rule, from: cfg.baseModel }, 'base model located');
  const adapter = cfg.adapter ? await locateAdapter(cfg.adapter, base.path) : null;
  if (adapter) ev.info?.({ path: adapter.path, rule: adapter.rule, from: cfg.adapter }, 'adapter located');
  else ev.info?.({}, 'no adapter configured: serving the base model');

  const engine = await Engine.load({
    modelPath: base.path,
    backend: cfg.backend,
    slots: cfg.slots,
    maxQueue: cfg.maxQueue,
    contextSize: cfg.contextSize,
    ...(cfg.threads !== undefined ? { threads: cfg.threads } : {}),
    ...(ev.onProgress ? { onProgress: ev.onProgress } : {}),
  });
  ev.info?.({ backend: engine.backend.name, reason: engine.backend.reason, devices: engine.backend.devices.map((d) => d.description) }, 'backend');
  ev.info?.({ ...engine.model }, 'model loaded');
  try {
    if (adapter) await engine.loadAdapter(DEFAULT_ADAPTER, adapter.path);
  } catch (e) {
    await engine.close();
    throw e;
  }
  return new Predictor(engine, cfg.genConfig, adapter ? DEFAULT_ADAPTER : null);
}
