// Merging the served adapter into the base weights ahead of time. An unmerged LoRA adds two small
// matmuls per projection to every decode step (half of it on the H200: 1b F16, rank 16 on all
// projections, 1.16 -> 2.35 ms a step); merged, the adapter's requests run at the base model's speed, and the engine serves
// other scales, and the base model, by applying the same adapter at the difference (see Engine).
import { writeAtomically } from './atomic.ts';
import { resolveBackend, type BackendChoice } from './backend.ts';
import { fromNative } from './errors.ts';
import type { NativeMergeInfo } from './native.ts';

export interface MergeOptions {
  modelPath: string;
  adapterPath: string;
  /** The merged GGUF; written beside it first and renamed, so a killed merge leaves no half file. */
  out: string;
  /** The user's scale (alpha/rank is applied on top, as llama.cpp does). Default 1. */
  scale?: number;
  threads?: number;
  onProgress?: (fraction: number) => void;
  /**
   * Whose addon does the work (the merge itself runs on the CPU either way): pass the engine's own
   * choice, as one process must never load both builds (their llama.cpp libraries share names).
   */
  backend?: BackendChoice;
}

export type MergeInfo = NativeMergeInfo;

export async function mergeAdapter(o: MergeOptions): Promise<MergeInfo> {
  const { addon } = resolveBackend(o.backend ?? 'auto');
  try {
    return await writeAtomically(o.out, (tmp) =>
      addon.mergeLora(
        { base: o.modelPath, adapter: o.adapterPath, out: tmp, scale: o.scale ?? 1, threads: o.threads ?? 1 },
        o.onProgress,
      ),
    );
  } catch (err) {
    throw fromNative(err);
  }
}
