// `convert-lora`, `convert-model` and `merge-lora`: files in, files out, in-process.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { cpuBudget, mergeAdapter, QUANT_TYPES, type QuantType, quantizeModel } from '../engine/index.ts';
import { convertHfModel } from '../intake/hf-model.ts';
import { convertPeftAdapter } from '../intake/peft.ts';
import type { OutType } from '../intake/gguf-writer.ts';

export async function runConvertLora(
  peftDir: string,
  o: { base?: string; out: string; outtype: string },
): Promise<void> {
  if (!['f32', 'f16', 'bf16'].includes(o.outtype)) throw new Error('--outtype must be f32, f16 or bf16');
  let base = o.base;
  if (!base) {
    // Like llama.cpp's converter: fall back to the base the adapter names, when it is on disk.
    const cfgFile = path.join(peftDir, 'adapter_config.json');
    const named = existsSync(cfgFile)
      ? (JSON.parse(readFileSync(cfgFile, 'utf8')).base_model_name_or_path as string | null)
      : null;
    if (!named || !existsSync(path.join(named, 'config.json'))) {
      throw new Error(
        `the base model is needed: pass --base <hf-dir or base.gguf>${named ? ` ('${named}' is not a local directory)` : ''}`,
      );
    }
    base = named;
  }
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format: 'converting [{bar}] {value}/{total} tensors', stream: process.stderr, clearOnComplete: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  const t0 = performance.now();
  const r = await convertPeftAdapter({
    peftDir,
    base,
    out: o.out,
    outtype: o.outtype as OutType,
    onTensor: (done, total) => {
      if (done === 1) bar?.start(total, 0);
      bar?.update(done);
    },
  });
  bar?.stop();
  console.error(
    `wrote ${o.out}: ${r.tensors} tensors, alpha ${r.alpha}, ${((performance.now() - t0) / 1000).toFixed(2)} s`,
  );
}

const JS_TYPES = ['auto', 'f32', 'f16', 'bf16', 'q8_0', 'q4_0'];
const LLAMA_QUANTS = QUANT_TYPES.filter((t) => !JS_TYPES.includes(t));

const bar = (format: string) =>
  process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format, stream: process.stderr, clearOnComplete: true },
        cliProgress.Presets.shades_classic,
      )
    : null;

/**
 * `convert-model`: a Hugging Face checkpoint directory to a GGUF model, streamed tensor by tensor;
 * a K-quant goes through the checkpoint's own precision first, then llama.cpp's quantizer.
 */
export async function runConvertModel(
  dir: string,
  o: { out: string; outtype: string; threads?: number; backend?: string },
): Promise<void> {
  if (![...JS_TYPES, ...LLAMA_QUANTS].includes(o.outtype)) {
    throw new Error(`--outtype must be one of ${[...JS_TYPES, ...LLAMA_QUANTS].join(', ')}`);
  }
  const quant = LLAMA_QUANTS.includes(o.outtype as QuantType) ? (o.outtype as QuantType) : null;
  const out = quant ? `${o.out}.source-${process.pid}.gguf` : o.out;
  const converting = bar('converting [{bar}] {percentage}% {value}/{total} MB');
  const t0 = performance.now();
  let started = false;
  try {
    const r = await convertHfModel({
      dir,
      out,
      outtype: quant ? 'auto' : (o.outtype as OutType | 'auto'),
      onProgress: (done, total) => {
        if (!started) converting?.start(Math.round(total / 1e6), 0);
        started = true;
        converting?.update(Math.round(done / 1e6));
      },
    });
    converting?.stop();
    const s = (performance.now() - t0) / 1000;
    console.error(
      `${quant ? 'converted' : `wrote ${o.out}`}: ${r.tensors} tensors as ${r.outtype}, ${(r.bytes / 1e6).toFixed(1)} MB read in ${s.toFixed(2)} s (${(r.bytes / 1e6 / s).toFixed(0)} MB/s)`,
    );
    if (!quant) return;
    const quantizing = bar(`quantizing to ${quant} [{bar}] {percentage}%`);
    quantizing?.start(100, 0);
    const t1 = performance.now();
    const threads = o.threads ?? cpuBudget().cpus;
    const q = await quantizeModel({
      input: out,
      output: o.out,
      type: quant,
      threads,
      backend: (o.backend ?? 'auto') as 'auto',
      onProgress: (f) => quantizing?.update(Math.round(f * 100)),
    });
    quantizing?.stop();
    console.error(
      `wrote ${o.out}: ${q.tensors} tensors quantized to ${quant} by llama.cpp on ${threads} threads in ${((performance.now() - t1) / 1000).toFixed(2)} s`,
    );
  } finally {
    if (quant) rmSync(out, { force: true });
  }
}

/** `merge-lora`: base + adapter into one GGUF of the base's types, the file `serve` would cache. */
export async function runMergeLora(o: {
  model: string;
  adapter: string;
  out: string;
  scale: number;
  threads?: number;
  backend: string;
}): Promise<void> {
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format: 'merging [{bar}] {percentage}%', stream: process.stderr, clearOnComplete: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(100, 0);
  const t0 = performance.now();
  const r = await mergeAdapter({
    modelPath: o.model,
    adapterPath: o.adapter,
    out: o.out,
    scale: o.scale,
    threads: o.threads ?? cpuBudget().cpus,
    backend: o.backend as 'auto',
    onProgress: (f) => bar?.update(Math.round(f * 100)),
  });
  bar?.stop();
  const widened = r.widened ? `, ${r.widened} widened to F16` : '';
  console.error(
    `wrote ${o.out}: ${r.merged} of ${r.tensors} tensors merged at scale ${r.effectiveScale.toPrecision(4)} (scale·alpha/rank)${widened}, ${((performance.now() - t0) / 1000).toFixed(2)} s`,
  );
}
