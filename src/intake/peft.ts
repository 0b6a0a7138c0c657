// PEFT LoRA adapter directory -> GGUF LoRA that llama.cpp loads, in-process. Names and layouts follow
// llama.cpp's convert_lora_to_gguf.py (including the Llama q/k row permutation, applied to lora_b,
// and Bloom's fused-QKV reordering); PEFT's scaling (alpha/r, rslora's alpha/sqrt(r), rank_pattern,
// alpha_pattern) is folded into lora_b so llama.cpp's alpha/rank reproduces it exactly.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { checkAdapterFamily } from './adapter-family.ts';
import {
  ARCHS,
  bloomQkvSource,
  HF_ARCH,
  isArch,
  LAYERS,
  literal,
  llamaPermutedRow,
  permutesQK,
  type Arch,
} from './architectures.ts';
import { ggufKind, readGgufHeader } from './gguf-header.ts';
import { GgufWriter, type OutType } from './gguf-writer.ts';
import { IntakeError } from './errors.ts';
import { reorderRows } from './hf-model.ts';
import { SafetensorsFile } from './safetensors.ts';

export { IntakeError };

/** What the conversion needs to know about the base model. */
export interface BaseShape {
  arch: Arch;
  nHead: number;
  nHeadKv: number;
  nEmbd: number;
  /** Llama-family q/k weights are permuted by llama.cpp's converter; their LoRA must be too. */
  permuteQK: boolean;
}

/** From a Hugging Face config.json directory or a base GGUF file. */
export async function baseShape(base: string): Promise<BaseShape> {
  if (base.endsWith('.gguf')) {
    const h = await readGgufHeader(base);
    if (ggufKind(h) !== 'model') throw new IntakeError(`${base} is not a model GGUF`);
    const arch = String(h.metadata.get('general.architecture'));
    if (!isArch(arch))
      throw new IntakeError(`unsupported base architecture '${arch}' in ${base} (supported: ${ARCHS.join(', ')})`);
    const num = (k: string) => Number(h.metadata.get(`${arch}.${k}`));
    const nHead = num('attention.head_count');
    return {
      arch,
      nHead,
      nHeadKv: num('attention.head_count_kv') || nHead,
      nEmbd: num('embedding_length'),
      permuteQK: permutesQK(arch),
    };
  }
  const file = path.join(base, 'config.json');
  if (!existsSync(file)) throw new IntakeError(`no config.json in ${base} (the base model's Hugging Face directory)`);
  const c = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const name = (c.architectures as string[] | undefined)?.[0] ?? '';
  const arch = HF_ARCH[name];
  if (!arch)
    throw new IntakeError(
      `unsupported base architecture '${name || c.model_type}' (supported: ${Object.keys(HF_ARCH).join(', ')})`,
    );
  const nHead = Number(c.num_attention_heads ?? c.n_head);
  return {
    arch,
    nHead,
    nHeadKv: Number(c.num_key_value_heads ?? nHead),
    nEmbd: Number(c.hidden_size ?? c.n_embed),
    permuteQK: permutesQK(arch),
  };
}

/** PEFT target modules (the full module path) → the llama.cpp tensor, per family. */
const MODULES = Object.fromEntries(
  Object.entries(LAYERS).map(([arch, l]) => [
    arch,
    Object.entries(l.linear).map(
      ([hf, gguf]) => [new RegExp(`^${literal(l.prefix)}\\.(\\d+)\\.${literal(hf)}$`), gguf] as [RegExp, string],
    ),
  ]),
) as Record<Arch, [RegExp, string][]>;

interface LoraConfig {
  r: number;
  lora_alpha: number;
  use_rslora?: boolean;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  [k: string]: unknown;
}

function readConfig(dir: string): LoraConfig {
  const file = path.join(dir, 'adapter_config.json');
  if (!existsSync(file)) throw new IntakeError(`no adapter_config.json in ${dir}: not a PEFT adapter directory`);
  const c = JSON.parse(readFileSync(file, 'utf8')) as LoraConfig;
  const refuse = (key: string, why: string) => {
    throw new IntakeError(
      `adapter_config.json: ${key} ${why}; only plain LoRA on linear layers converts to a llama.cpp adapter`,
    );
  };
  if (c.peft_type !== undefined && c.peft_type !== 'LORA') refuse('peft_type', `is ${JSON.stringify(c.peft_type)}`);
  if (c.use_dora) refuse('use_dora', 'is true (DoRA)');
  if (c.modules_to_save && (c.modules_to_save as unknown[]).length)
    refuse('modules_to_save', `is set (${JSON.stringify(c.modules_to_save)})`);
  if (c.bias !== undefined && c.bias !== 'none') refuse('bias', `is ${JSON.stringify(c.bias)}`);
  if (c.lora_bias) refuse('lora_bias', 'is true');
  if (c.fan_in_fan_out) refuse('fan_in_fan_out', 'is true');
  if (c.target_parameters) refuse('target_parameters', 'is set');
  if (c.trainable_token_indices) refuse('trainable_token_indices', 'is set');
  if (c.layer_replication) refuse('layer_replication', 'is set');
  if (!(c.r > 0) || typeof c.lora_alpha !== 'number')
    throw new IntakeError('adapter_config.json: r and lora_alpha are required');
  return c;
}

/** PEFT's own pattern lookup: the first key that matches the module name at a dot boundary. */
function patternValue(patterns: Record<string, number> | undefined, module: string): number | undefined {
  for (const [key, value] of Object.entries(patterns ?? {})) {
    if (new RegExp(`(^|.*\\.)${key}$`).test(module)) return value;
  }
  return undefined;
}

function rowMap(kind: string, rows: number, s: BaseShape): ((i: number) => number) | null {
  if (s.permuteQK && (kind === 'attn_q' || kind === 'attn_k')) {
    // LlamaModel.permute: reshape(n_head, 2, half, ...).swapaxes(1, 2)
    const nHead = kind === 'attn_k' ? s.nHeadKv : s.nHead;
    return (i) => llamaPermutedRow(i, rows, nHead);
  }
  if (s.arch === 'bloom' && kind === 'attn_qkv') return (i) => bloomQkvSource(i, s.nEmbd, s.nHead);
  return null;
}

export interface ConvertLoraOptions {
  peftDir: string;
  /** Base model: its Hugging Face directory or its GGUF file. */
  base: string;
  out: string;
  outtype?: OutType;
  onTensor?: (done: number, total: number) => void;
}

export async function convertPeftAdapter(o: ConvertLoraOptions): Promise<{ tensors: number; alpha: number }> {
  const cfg = readConfig(o.peftDir);
  const file = path.join(o.peftDir, 'adapter_model.safetensors');
  if (!existsSync(file)) {
    if (existsSync(path.join(o.peftDir, 'adapter_model.bin'))) {
      throw new IntakeError(
        `${o.peftDir} holds adapter_model.bin (a pickle): save the adapter with safetensors (save_pretrained(..., safe_serialization=True))`,
      );
    }
    throw new IntakeError(`no adapter_model.safetensors in ${o.peftDir}`);
  }
  const shape = await baseShape(o.base);
  await checkAdapterFamily(o.peftDir, cfg.base_model_name_or_path, o.base, shape.arch);
  const st = await SafetensorsFile.open(file);
  try {
    const modules = new Map<string, { a?: string; b?: string }>();
    for (const name of st.tensors.keys()) {
      const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(name);
      if (!m) {
        const why = /lora_embedding_/.test(name)
          ? 'embedding adapters are not supported'
          : /lora_magnitude_vector/.test(name)
            ? 'DoRA magnitudes are not supported'
            : /\.bias$/.test(name)
              ? 'LoRA biases are not supported'
              : 'not a lora_A/lora_B weight';
        throw new IntakeError(`tensor '${name}': ${why}`);
      }
      const entry = modules.get(m[1]!) ?? {};
      entry[m[2] === 'A' ? 'a' : 'b'] = name;
      modules.set(m[1]!, entry);
    }
    const alpha = cfg.lora_alpha;
    const writer = new GgufWriter()
      .kv('general.architecture', { type: 'string', value: shape.arch })
      .kv('general.type', { type: 'string', value: 'adapter' })
      .kv('adapter.type', { type: 'string', value: 'lora' })
      .kv('adapter.lora.alpha', { type: 'f32', value: alpha })
      .kv('general.quantization_version', { type: 'u32', value: 2 });
    const outtype = o.outtype ?? 'f32';
    for (const [module, { a, b }] of [...modules.entries()].sort(([x], [y]) => (x < y ? -1 : 1))) {
      if (!a || !b) throw new IntakeError(`module '${module}' has lora_${a ? 'B' : 'A'} missing`);
      const rule = MODULES[shape.arch].find(([re]) => re.test(module));
      if (!rule) throw new IntakeError(`module '${module}' has no llama.cpp ${shape.arch} counterpart`);
      const layer = rule[0].exec(module)![1];
      const dest = `blk.${layer}.${rule[1]}.weight`;
      const aShape = st.tensors.get(a)!.shape; // (r, in)
      const bShape = st.tensors.get(b)!.shape; // (out, r)
      const r = aShape[0]!;
      if (bShape[1] !== r) throw new IntakeError(`module '${module}': lora_A rank ${r} but lora_B ${bShape}`);
      // PEFT scales by alpha_m/r_m (rslora: alpha_m/sqrt(r_m)); llama.cpp by alpha/r_m from the GGUF.
      const alphaM = patternValue(cfg.alpha_pattern, module) ?? alpha;
      const peftScale = cfg.use_rslora ? alphaM / Math.sqrt(r) : alphaM / r;
      const fold = alpha === 0 ? peftScale : (peftScale * r) / alpha;
      const map = rowMap(rule[1], bShape[0]!, shape);
      writer.tensor(`${dest}.lora_a`, aShape, outtype, () => st.readF32(a));
      writer.tensor(`${dest}.lora_b`, bShape, outtype, async () => {
        let v = await st.readF32(b);
        if (map) v = reorderRows(v, bShape[0]!, map);
        if (fold !== 1) for (let i = 0; i < v.length; i++) v[i] = v[i]! * fold;
        return v;
      });
    }
    await writer.write(o.out, o.onTensor);
    return { tensors: modules.size * 2, alpha };
  } finally {
    await st.close();
  }
}
