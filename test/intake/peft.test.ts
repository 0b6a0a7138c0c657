// PEFT -> GGUF LoRA: equal to llama.cpp's converter where it is right, better where it is not.
import {
  existsSync,
  readFileSync,
  truncateSync,
  copyFileSync,
  mkdtempSync,
  mkdirSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { locateAdapter } from '../../src/cml/locate.ts';
import { readGgufHeader, type GgufHeader } from '../../src/intake/gguf-header.ts';
import { convertPeftAdapter } from '../../src/intake/peft.ts';
import { loadEngine, loadReference, modelDir } from '../helpers.ts';
import { writePeft } from './peft-fixture.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-peft-'));
const qa = modelDir('tiny-qa');

function tensorData(file: string, h: GgufHeader, name: string): Float32Array {
  const t = h.tensors.find((x) => x.name === name)!;
  const n = t.ne.reduce((a, b) => a * b, 1);
  const buf = readFileSync(file).subarray(t.offset, t.offset + n * 4);
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

describe('convert-lora', () => {
  it("tiny-qa: equal to llama.cpp's convert_lora_to_gguf.py output, tensor for tensor", async () => {
    const out = path.join(tmp, 'qa.gguf');
    await convertPeftAdapter({ peftDir: path.join(qa, 'adapter-peft'), base: path.join(qa, 'base-hf'), out });
    const [ours, theirs] = [await readGgufHeader(out), await readGgufHeader(path.join(qa, 'adapter-f32.gguf'))];
    for (const key of ['general.architecture', 'general.type', 'adapter.type', 'adapter.lora.alpha']) {
      expect(ours.metadata.get(key)).toEqual(theirs.metadata.get(key));
    }
    expect(ours.tensors.map((t) => t.name).sort()).toEqual(theirs.tensors.map((t) => t.name).sort());
    for (const t of theirs.tensors) {
      const mine = ours.tensors.find((x) => x.name === t.name)!;
      expect([mine.ne, mine.type]).toEqual([t.ne, t.type]);
      expect(tensorData(out, ours, t.name)).toEqual(tensorData(path.join(qa, 'adapter-f32.gguf'), theirs, t.name));
    }
  });

  it('tiny-qwen2 (rslora): the converted adapter reproduces transformers + PEFT at the plain scale', async () => {
    const fx = modelDir('tiny-qwen2');
    const out = path.join(tmp, 'qwen.gguf');
    await convertPeftAdapter({
      peftDir: path.join(fx, 'adapter-peft'),
      base: path.join(fx, 'base-hf'),
      out,
      outtype: 'f16',
    });
    const engine = await loadEngine('tiny-qwen2', { slots: 1, kvCacheType: 'f32', flashAttention: 'off' });
    try {
      await engine.loadAdapter('lora', out);
      const ref = loadReference('tiny-qwen2');
      let exact = 0;
      const cases = ref.cases.filter((c) => c.mode !== 'base');
      for (const c of cases) {
        const r = await engine.generate(c.prompt, {
          greedy: true,
          maxTokens: c.greedy_ids.length,
          adapters: [{ name: 'lora', scale: c.mode === 'adapter' ? 1 : 0.5 }],
        }).result;
        const ids = r.stopReason === 'eos' ? [...r.tokens, ref.eos] : r.tokens;
        if (JSON.stringify(ids) === JSON.stringify(c.greedy_ids)) exact++;
      }
      expect(exact / cases.length).toBeGreaterThanOrEqual(0.97);
    } finally {
      await engine.close();
    }
  });

  it("rslora, rank_pattern and alpha_pattern: llama.cpp's alpha/rank times B·A equals PEFT's scale times B·A", async () => {
    const dir = path.join(tmp, 'patterns');
    const modules = [
      { module: 'model.layers.0.self_attn.q_proj', inDim: 128, outDim: 128, r: 4 },
      { module: 'model.layers.0.self_attn.k_proj', inDim: 128, outDim: 64, r: 8 },
      { module: 'model.layers.1.self_attn.v_proj', inDim: 128, outDim: 64, r: 8 },
      { module: 'model.layers.1.mlp.down_proj', inDim: 352, outDim: 128, r: 8 },
    ];
    const tensors = writePeft(
      dir,
      {
        r: 8,
        lora_alpha: 16,
        use_rslora: true,
        rank_pattern: { q_proj: 4 },
        alpha_pattern: { 'layers.1.self_attn.v_proj': 32 },
      },
      modules,
    );
    const out = path.join(tmp, 'patterns.gguf');
    await convertPeftAdapter({ peftDir: dir, base: path.join(qa, 'base-hf'), out });
    const h = await readGgufHeader(out);
    const alphaGguf = h.metadata.get('adapter.lora.alpha') as number;
    const permute = (kind: string, rows: number, i: number) => {
      if (kind !== 'attn_q' && kind !== 'attn_k') return i;
      const nHead = kind === 'attn_q' ? 4 : 2; // tiny-qa: 4 heads, 2 KV heads
      const half = rows / nHead / 2;
      const hh = Math.floor(i / (2 * half)),
        j = Math.floor((i % (2 * half)) / 2),
        k = i % 2;
      return hh * 2 * half + k * half + j;
    };
    for (const [m, kind, alphaM] of [
      [modules[0]!, 'attn_q', 16],
      [modules[1]!, 'attn_k', 16],
      [modules[2]!, 'attn_v', 32],
      [modules[3]!, 'ffn_down', 16],
    ] as const) {
      const layer = /layers\.(\d+)/.exec(m.module)![1];
      const name = `blk.${layer}.${kind}.weight`;
      const A = tensorData(out, h, `${name}.lora_a`);
      const B = tensorData(out, h, `${name}.lora_b`);
      const peftA = tensors[`base_model.model.${m.module}.lora_A.weight`]!.data;
      const peftB = tensors[`base_model.model.${m.module}.lora_B.weight`]!.data;
      const peftScale = alphaM / Math.sqrt(m.r);
      const llamaScale = alphaGguf / m.r; // what llama.cpp applies: alpha / rank of this tensor
      let worst = 0;
      for (let row = 0; row < m.outDim; row += 7) {
        for (let col = 0; col < m.inDim; col += 5) {
          let ours = 0,
            theirs = 0;
          const src = permute(kind, m.outDim, row);
          for (let k = 0; k < m.r; k++) {
            ours += B[row * m.r + k]! * A[k * m.inDim + col]!;
            theirs += peftB[src * m.r + k]! * peftA[k * m.inDim + col]!;
          }
          worst = Math.max(worst, Math.abs(llamaScale * ours - peftScale * theirs));
        }
      }
      expect(worst, name).toBeLessThan(1e-4);
    }
  });

  it('Bloom: fused query_key_value rows are regrouped as llama.cpp regroups the base weight', async () => {
    const base = path.join(tmp, 'bloom-base');
    mkdirSync(base);
    writeFileSync(
      path.join(base, 'config.json'),
      JSON.stringify({ architectures: ['BloomForCausalLM'], n_head: 2, hidden_size: 8 }),
    );
    const dir = path.join(tmp, 'bloom');
    const module = 'transformer.h.0.self_attention.query_key_value';
    const tensors = writePeft(dir, { r: 2, lora_alpha: 2 }, [{ module, inDim: 8, outDim: 24, r: 2 }]);
    const out = path.join(tmp, 'bloom.gguf');
    await convertPeftAdapter({ peftDir: dir, base, out });
    const h = await readGgufHeader(out);
    expect(h.metadata.get('general.architecture')).toBe('bloom');
    const B = tensorData(out, h, 'blk.0.attn_qkv.weight.lora_b');
    const peftB = tensors[`base_model.model.${module}.lora_B.weight`]!.data;
    // PEFT rows are (head, q|k|v, head_dim); llama.cpp wants all q rows, then k, then v.
    for (let c = 0; c < 3; c++)
      for (let head = 0; head < 2; head++)
        for (let d = 0; d < 4; d++) {
          const newRow = c * 8 + head * 4 + d;
          const oldRow = head * 12 + c * 4 + d;
          expect([B[newRow * 2], B[newRow * 2 + 1]]).toEqual([peftB[oldRow * 2], peftB[oldRow * 2 + 1]]);
        }
  });

  it.each([
    ['DoRA', { use_dora: true }, {}, /use_dora is true/],
    ['modules_to_save', { modules_to_save: ['lm_head'] }, {}, /modules_to_save is set/],
    ['bias', { bias: 'all' }, {}, /bias is "all"/],
    [
      'embedding adapter',
      {},
      { 'base_model.model.model.embed_tokens.lora_embedding_A': { shape: [2, 2], data: new Float32Array(4) } },
      /embedding adapters/,
    ],
    [
      'LoRA bias tensor',
      {},
      { 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias': { shape: [2], data: new Float32Array(2) } },
      /LoRA biases/,
    ],
  ])('%s is a clear error naming the key', async (_n, config, extra, message) => {
    const dir = path.join(tmp, `bad-${_n.replaceAll(' ', '-')}`);
    writePeft(
      dir,
      { r: 2, lora_alpha: 4, ...config },
      [{ module: 'model.layers.0.self_attn.q_proj', inDim: 128, outDim: 128, r: 2 }],
      extra,
    );
    await expect(
      convertPeftAdapter({ peftDir: dir, base: path.join(qa, 'base-hf'), out: path.join(tmp, 'x.gguf') }),
    ).rejects.toThrow(message);
  });

  it('unknown modules and architectures, pickles and truncated files', async () => {
    const dir = path.join(tmp, 'lmhead');
    writePeft(dir, { r: 2, lora_alpha: 4 }, [{ module: 'lm_head', inDim: 128, outDim: 448, r: 2 }]);
    await expect(
      convertPeftAdapter({ peftDir: dir, base: path.join(qa, 'base-hf'), out: path.join(tmp, 'x.gguf') }),
    ).rejects.toThrow(/'lm_head' has no llama.cpp llama counterpart/);

    const gpt2 = path.join(tmp, 'gpt2');
    mkdirSync(gpt2);
    writeFileSync(path.join(gpt2, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'] }));
    await expect(
      convertPeftAdapter({ peftDir: path.join(qa, 'adapter-peft'), base: gpt2, out: path.join(tmp, 'x.gguf') }),
    ).rejects.toThrow(/unsupported base architecture 'GPT2LMHeadModel'/);

    const pickle = path.join(tmp, 'pickle');
    mkdirSync(pickle);
    copyFileSync(path.join(qa, 'adapter-peft/adapter_config.json'), path.join(pickle, 'adapter_config.json'));
    writeFileSync(path.join(pickle, 'adapter_model.bin'), 'not really');
    await expect(
      convertPeftAdapter({ peftDir: pickle, base: path.join(qa, 'base-hf'), out: path.join(tmp, 'x.gguf') }),
    ).rejects.toThrow(/save the adapter with safetensors/);

    const cut = path.join(tmp, 'cut');
    mkdirSync(cut);
    copyFileSync(path.join(qa, 'adapter-peft/adapter_config.json'), path.join(cut, 'adapter_config.json'));
    copyFileSync(path.join(qa, 'adapter-peft/adapter_model.safetensors'), path.join(cut, 'adapter_model.safetensors'));
    truncateSync(path.join(cut, 'adapter_model.safetensors'), 100_000);
    await expect(
      convertPeftAdapter({ peftDir: cut, base: path.join(qa, 'base-hf'), out: path.join(tmp, 'x.gguf') }),
    ).rejects.toThrow(/truncated/);
  });
});

describe('an adapter trained on another family', () => {
  // tiny-qwen2's adapter (as the studio saves it: with the tokenizer beside it) on tiny-qa's Llama base.
  const qwen = modelDir('tiny-qwen2');
  const qwenAdapter = (name: string, config: Record<string, unknown>) => {
    const dir = path.join(tmp, name);
    mkdirSync(dir);
    const base = JSON.parse(readFileSync(path.join(qwen, 'adapter-peft/adapter_config.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ ...base, ...config }));
    copyFileSync(
      path.join(qwen, 'adapter-peft/adapter_model.safetensors'),
      path.join(dir, 'adapter_model.safetensors'),
    );
    return dir;
  };

  it('is refused by the tokenizer saved beside it', async () => {
    const dir = qwenAdapter('qwen-tok', {});
    copyFileSync(path.join(qwen, 'base-hf/tokenizer.json'), path.join(dir, 'tokenizer.json'));
    for (const base of [path.join(qa, 'base-f32.gguf'), path.join(qa, 'base-hf')]) {
      await expect(convertPeftAdapter({ peftDir: dir, base, out: path.join(tmp, 'x.gguf') })).rejects.toThrow(
        /the adapter's tokenizer .* is not the base's .*trained on another model/,
      );
    }
    // On its own base, the same folder converts.
    await expect(
      convertPeftAdapter({ peftDir: dir, base: path.join(qwen, 'base-f32.gguf'), out: path.join(tmp, 'qwen-ok.gguf') }),
    ).resolves.toBeDefined();
  });

  it('is refused by the base_model_name_or_path it names, when that model is on disk', async () => {
    const dir = qwenAdapter('qwen-named', { base_model_name_or_path: path.join(qwen, 'base-hf') });
    await expect(
      convertPeftAdapter({ peftDir: dir, base: path.join(qa, 'base-f32.gguf'), out: path.join(tmp, 'x.gguf') }),
    ).rejects.toThrow(/trained on '.*tiny-qwen2\/base-hf' \(Qwen2ForCausalLM\), but the base is a llama model/);
  });
});

describe('serving a PEFT directory', () => {
  it('converts once into the cache, reuses it, and rebuilds when the adapter changes', async () => {
    const cache = path.join(tmp, 'cache');
    const peft = path.join(tmp, 'served-peft');
    mkdirSync(peft);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
      copyFileSync(path.join(qa, 'adapter-peft', f), path.join(peft, f));
    const base = path.join(qa, 'base-f32.gguf');
    mkdirSync(cache, { recursive: true });
    const stale = path.join(cache, 'adapter-0123.gguf.tmp-999999999'); // left by a killed conversion
    writeFileSync(stale, 'half');
    const first = await locateAdapter(peft, base, cache);
    expect(existsSync(stale)).toBe(false);
    expect(first.rule).toMatch(/converted into the cache/);
    const again = await locateAdapter(peft, base, cache);
    expect(again).toEqual({ path: first.path, rule: expect.stringMatching(/reused from the cache/) });
    utimesSync(path.join(peft, 'adapter_model.safetensors'), new Date(), new Date(Date.now() + 5000));
    const rebuilt = await locateAdapter(peft, base, cache);
    expect(rebuilt.path).not.toBe(first.path);
    expect(rebuilt.rule).toMatch(/converted/);

    const engine = await loadEngine('tiny-qa', { slots: 1 });
    try {
      await engine.loadAdapter('peft', rebuilt.path);
      const r = await engine.generate(loadReference('tiny-qa').cases[0]!.prompt, {
        greedy: true,
        maxTokens: 20,
        adapters: [{ name: 'peft' }],
      }).result;
      expect(r.text).toBe(' The capital of Belithne is Ulqua!');
    } finally {
      await engine.close();
    }
  });
});
