// Rotary position embeddings from a Hugging Face config.json into GGUF, as llama.cpp's
// convert_hf_to_gguf.py writes them (TextModel.set_gguf_parameters, LlamaModel.generate_extra_tensors)
// and as llama.cpp then computes them. The parameters come from `rope_parameters` (transformers 5)
// or `rope_scaling` (older), whose type is `rope_type` or, in older files, `type`: both spellings
// are read, and a type or key that would change the numbers and that llama.cpp does not compute as
// transformers does is refused by name. A scaling dropped without a word gives a model that answers,
// wrongly: against transformers with linear x4, the next token differed on 4 of 5 prompts.
import { IntakeError } from './errors.ts';
import type { KvValue } from './gguf-writer.ts';

export interface Rope {
  /** rope_theta. */
  freqBase: number;
  /** `{arch}.rope.*` entries beside freq_base (key without the `{arch}.` prefix). */
  kv: [string, KvValue][];
  /** llama3: the per-dimension divisors of the frequencies, as `rope_freqs.weight` (f32, head_dim / 2). */
  freqFactors: Float32Array | null;
}

// The keys each type reads. Everything else in the parameters is refused: a key we do not know may
// change the numbers (mscale, mscale_all_dim: DeepSeek's YaRN; short_factor: longrope).
// original_max_position_embeddings is only informative outside the types that read it (transformers
// 5 mirrors it into every rope_parameters of a model whose config has it, as Phi-3's does).
const COMMON = ['rope_type', 'type', 'rope_theta', 'partial_rotary_factor', 'original_max_position_embeddings'];
const KEYS: Record<string, string[]> = {
  default: [],
  linear: ['factor'],
  llama3: ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'],
  yarn: ['factor', 'original_max_position_embeddings', 'beta_fast', 'beta_slow', 'attention_factor', 'truncate'],
};

const yarnMscale = (factor: number) => (factor <= 1 ? 1 : 0.1 * Math.log(factor) + 1);

/** The rope of a config; throws IntakeError for what cannot be converted exactly. */
export function ropeFromConfig(c: Record<string, unknown>, headDim: number): Rope {
  const raw = c.rope_parameters ?? c.rope_scaling ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new IntakeError(`config.json: rope_parameters/rope_scaling must be an object, got ${JSON.stringify(raw)}`);
  }
  const p = raw as Record<string, unknown>;
  if ('full_attention' in p || 'sliding_attention' in p) {
    throw new IntakeError(
      'config.json: per-layer-type rope parameters (full_attention/sliding_attention) are not supported yet',
    );
  }
  const freqBase = Number(p.rope_theta ?? c.rope_theta ?? 10000);
  const type = String(p.rope_type ?? p.type ?? 'default');
  const known = KEYS[type];
  if (!known) {
    throw new IntakeError(
      `config.json: rope type '${type}' is not supported (supported: ${Object.keys(KEYS).join(', ')}); converting without it would change every answer`,
    );
  }
  const unknown = Object.keys(p).filter((k) => !COMMON.includes(k) && !known.includes(k) && p[k] !== null);
  if (unknown.length) throw new IntakeError(`config.json: rope '${type}' with ${unknown.join(', ')} is not supported`);
  const prf = Number(p.partial_rotary_factor ?? c.partial_rotary_factor ?? 1);
  if (prf !== 1) throw new IntakeError(`config.json: partial_rotary_factor ${prf} is not supported yet`);
  const num = (k: string, fallback?: number): number => {
    const v = p[k] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new IntakeError(`config.json: rope '${type}' needs ${k} as a number > 0, got ${JSON.stringify(p[k])}`);
    }
    return v;
  };
  const f32 = (value: number): KvValue => ({ type: 'f32', value });

  if (type === 'default') return { freqBase, kv: [], freqFactors: null };
  if (type === 'linear') {
    return {
      freqBase,
      kv: [
        ['rope.scaling.type', { type: 'string', value: 'linear' }],
        ['rope.scaling.factor', f32(num('factor'))],
      ],
      freqFactors: null,
    };
  }
  if (type === 'yarn') {
    const factor = num('factor');
    // llama.cpp always scales attention by transformers' default for YaRN (0.1 ln(factor) + 1), and
    // its corrections by floor/ceil (transformers' truncate: true).
    if (
      p.attention_factor !== undefined &&
      p.attention_factor !== null &&
      Math.abs(num('attention_factor') - yarnMscale(factor)) > 1e-6
    ) {
      throw new IntakeError(
        `config.json: yarn attention_factor ${p.attention_factor} is not supported (llama.cpp uses ${yarnMscale(factor).toFixed(6)}, 0.1 ln(factor) + 1)`,
      );
    }
    if (p.truncate === false) throw new IntakeError('config.json: yarn with truncate: false is not supported');
    const kv: [string, KvValue][] = [
      ['rope.scaling.type', { type: 'string', value: 'yarn' }],
      ['rope.scaling.factor', f32(factor)],
    ];
    if (p.original_max_position_embeddings != null) {
      kv.push([
        'rope.scaling.original_context_length',
        { type: 'u32', value: num('original_max_position_embeddings') },
      ]);
    }
    if (p.beta_fast != null) kv.push(['rope.scaling.yarn_beta_fast', f32(num('beta_fast'))]);
    if (p.beta_slow != null) kv.push(['rope.scaling.yarn_beta_slow', f32(num('beta_slow'))]);
    return { freqBase, kv, freqFactors: null };
  }
  // llama3: low frequencies divided by `factor`, high ones kept, a smooth blend between (transformers'
  // _compute_llama3_parameters); llama.cpp divides each frequency by its entry of rope_freqs.
  const factor = num('factor', 8);
  const low = num('low_freq_factor', 1);
  const high = num('high_freq_factor', 4);
  const orig = num('original_max_position_embeddings', 8192);
  const factors = new Float32Array(headDim / 2);
  for (let i = 0; i < factors.length; i++) {
    const freq = 1 / freqBase ** ((2 * i) / headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < orig / high) factors[i] = 1;
    else if (wavelen > orig / low) factors[i] = factor;
    else {
      const smooth = (orig / wavelen - low) / (high - low);
      factors[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return { freqBase, kv: [], freqFactors: factors };
}
