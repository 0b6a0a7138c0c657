// Quantizing a converted model with llama.cpp's own quantizer (llama_model_quantize, what
// llama-quantize runs): the K-quants people serve, which the JS writer does not make.
import { writeAtomically } from './atomic.ts';
import { resolveBackend, type BackendChoice } from './backend.ts';
import { fromNative } from './errors.ts';

/** The types llama.cpp's quantizer makes here (q8_0 and q4_0 the JS writer makes too). */
export const QUANT_TYPES = ['q4_k_m', 'q5_k_m', 'q6_k', 'q8_0', 'q4_0'] as const;
export type QuantType = (typeof QUANT_TYPES)[number];

export interface QuantizeOptions {
  /** An f32, f16 or bf16 GGUF model. */
  input: string;
  /** Written beside itself first and renamed, so a killed run leaves no half file. */
  output: string;
  type: QuantType;
  threads?: number;
  onProgress?: (fraction: number) => void;
  /** Whose addon does the work (the quantizer runs on the CPU either way); see mergeAdapter. */
  backend?: BackendChoice;
}

export async function quantizeModel(o: QuantizeOptions): Promise<{ tensors: number }> {
  const { addon } = resolveBackend(o.backend ?? 'auto');
  try {
    return await writeAtomically(o.output, (tmp) =>
      addon.quantizeModel({ input: o.input, output: tmp, type: o.type, threads: o.threads ?? 1 }, o.onProgress),
    );
  } catch (err) {
    throw fromNative(err);
  }
}
