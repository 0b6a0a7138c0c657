export { Engine, type EngineOptions, type GenerateParams } from './engine.ts';
export type { EngineClient, EngineHealth, ServedAdapter } from './client.ts';
export { Generation, type Chunk, type GenerationResult, type StopReason } from './generation.ts';
export { resolveBackend, type BackendChoice, type ResolvedBackend } from './backend.ts';
export { mergeAdapter, type MergeInfo, type MergeOptions } from './merge.ts';
export { QUANT_TYPES, quantizeModel, type QuantizeOptions, type QuantType } from './quantize.ts';
export * from './errors.ts';
export type {
  NativeAdapterInfo as AdapterInfo,
  NativeModelInfo as ModelInfo,
  NativeStats as EngineStats,
  TopLogprob,
} from './native.ts';
export { boundMessage, withinBound, type ParamBound, type ParamBounds, type ParamKey } from './params.ts';
export { ENGINE_DEFAULTS, SERVE_DEFAULTS } from './defaults.ts';
export { cpuBudget, type CpuBudget } from './cpus.ts';
export { schedulerPhases, type SchedulerPhases, type SchedulerProfile } from './phases.ts';
