// `convert-lora`: a PEFT adapter directory to a GGUF LoRA, in-process.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { convertPeftAdapter } from '../intake/peft.ts';
import type { OutType } from '../intake/gguf-writer.ts';

export async function runConvertLora(peftDir: string, o: { base?: string; out: string; outtype: string }): Promise<void> {
  if (!['f32', 'f16', 'bf16'].includes(o.outtype)) throw new Error('--outtype must be f32, f16 or bf16');
  let base = o.base;
  if (!base) {
    // Like llama.cpp's converter: fall back to the base the adapter names, when it is on disk.
    const cfgFile = path.join(peftDir, 'adapter_config.json');
    const named = existsSync(cfgFile) ? (JSON.parse(readFileSync(cfgFile, 'utf8')).base_model_name_or_path as string | null) : null;
    if (!named || !existsSync(path.join(named, 'config.json'))) {
      throw new Error('the base model is needed: pass --base <hf-dir or base.gguf>' + (named ? ` ('${named}' is not a local directory)` : ''));
    }
    base = named;
  }
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar({ format: 'converting [{bar}] {value}/{total} tensors', stream: process.stderr, clearOnComplete: true }, cliProgress.Presets.shades_classic)
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
  console.error(`wrote ${o.out}: ${r.tensors} tensors, alpha ${r.alpha}, ${((performance.now() - t0) / 1000).toFixed(2)} s`);
}
