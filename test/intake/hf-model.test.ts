// Hugging Face checkpoint -> GGUF: equal to llama.cpp's convert_hf_to_gguf.py on both fixtures.
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { locateBaseModel } from '../../src/cml/locate.ts';
import { readGgufHeader, type GgufHeader } from '../../src/intake/gguf-header.ts';
import { convertHfModel, sizeLabel } from '../../src/intake/hf-model.ts';
import { SafetensorsFile } from '../../src/intake/safetensors.ts';
import { startServer } from '../../src/server/server.ts';
import { loadEngine, modelDir } from '../helpers.ts';
import { writeSafetensors } from './peft-fixture.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-hf-'));
const plain = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x));

function expectSameGguf(oursFile: string, ours: GgufHeader, refFile: string, ref: GgufHeader) {
  expect([...ours.metadata.keys()].sort()).toEqual([...ref.metadata.keys()].sort());
  for (const [k, v] of ref.metadata) expect(plain(ours.metadata.get(k)), k).toBe(plain(v));
  const a = readFileSync(oursFile),
    b = readFileSync(refFile);
  expect(ours.tensors.map((t) => t.name).sort()).toEqual(ref.tensors.map((t) => t.name).sort());
  for (const t of ref.tensors) {
    const mine = ours.tensors.find((x) => x.name === t.name)!;
    expect([mine.ne, mine.type], t.name).toEqual([t.ne, t.type]);
    const n = t.ne.reduce((x, y) => x * y, 1) * 4;
    expect(a.subarray(mine.offset, mine.offset + n).equals(b.subarray(t.offset, t.offset + n)), t.name).toBe(true);
  }
}

function copyCheckpoint(from: string, to: string) {
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) copyFileSync(path.join(from, f), path.join(to, f));
}

describe('convert-model', () => {
  it.each(['tiny-qa', 'tiny-qwen2'] as const)(
    '%s: hyperparameters, tokenizer arrays and tensors equal base-f32.gguf',
    async (fx) => {
      const out = path.join(tmp, `${fx}.gguf`);
      await convertHfModel({ dir: path.join(modelDir(fx), 'base-hf'), out });
      const ref = path.join(modelDir(fx), 'base-f32.gguf');
      expectSameGguf(out, await readGgufHeader(out), ref, await readGgufHeader(ref));
    },
  );

  it('chat templates: a named list as gguf-py writes it, and chat_template.json', async () => {
    const dir = path.join(tmp, 'templates', 'base-hf');
    copyCheckpoint(path.join(modelDir('tiny-qa'), 'base-hf'), dir);
    const tcFile = path.join(dir, 'tokenizer_config.json');
    const tc = JSON.parse(readFileSync(tcFile, 'utf8'));
    tc.chat_template = [
      { name: 'default', template: '{{ messages }}' },
      { name: 'tool-use', template: '{{ tools }}' },
    ];
    writeFileSync(tcFile, JSON.stringify(tc));
    const out = path.join(tmp, 'templates.gguf');
    await convertHfModel({ dir, out });
    let m = (await readGgufHeader(out)).metadata;
    expect(m.get('tokenizer.chat_template')).toBe('{{ messages }}');
    expect(m.get('tokenizer.chat_template.tool_use')).toBe('{{ tools }}');
    expect(m.get('tokenizer.chat_templates')).toEqual(['tool_use']);
    delete tc.chat_template;
    writeFileSync(tcFile, JSON.stringify(tc));
    writeFileSync(path.join(dir, 'chat_template.json'), JSON.stringify({ chat_template: '{{ from the json }}' }));
    await convertHfModel({ dir, out });
    m = (await readGgufHeader(out)).metadata;
    expect(m.get('tokenizer.chat_template')).toBe('{{ from the json }}');
  });

  it('a sharded checkpoint (model.safetensors.index.json) gives the same file', async () => {
    const src = path.join(modelDir('tiny-qa'), 'base-hf');
    const dir = path.join(tmp, 'sharded', 'base-hf'); // general.name comes from the directory name
    copyCheckpoint(src, dir);
    const st = await SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    const names = [...st.tensors.keys()];
    const shards: Record<string, { shape: number[]; data: Float32Array }>[] = [{}, {}];
    const weightMap: Record<string, string> = {};
    for (const [i, n] of names.entries()) {
      shards[i % 2]![n] = { shape: st.tensors.get(n)!.shape, data: await st.readF32(n) };
      weightMap[n] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
    }
    await st.close();
    writeFileSync(path.join(dir, 'model.safetensors'), ''); // an empty leftover must not be read: the index decides
    for (const [i, s] of shards.entries())
      writeSafetensors(path.join(dir, `model-0000${i + 1}-of-00002.safetensors`), s);
    writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    const out = path.join(tmp, 'sharded.gguf');
    await convertHfModel({ dir, out });
    const ref = path.join(modelDir('tiny-qa'), 'base-f32.gguf');
    expectSameGguf(out, await readGgufHeader(out), ref, await readGgufHeader(ref));
  });

  it.each(['f16', 'bf16', 'q8_0'] as const)(
    '--outtype %s loads in llama.cpp and answers as the reference',
    async (outtype) => {
      const out = path.join(tmp, `qa-${outtype}.gguf`);
      await convertHfModel({ dir: path.join(modelDir('tiny-qa'), 'base-hf'), out, outtype });
      const h = await readGgufHeader(out);
      expect(h.metadata.get('general.file_type')).toBe({ f16: 1, bf16: 32, q8_0: 7 }[outtype]);
      const engine = await loadEngine('tiny-qa', { modelPath: out, slots: 1 });
      try {
        await engine.loadAdapter('qa', path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'));
        const r = await engine.generate('Question: What is the capital of Belithne?\nAnswer:', {
          greedy: true,
          maxTokens: 20,
          adapters: [{ name: 'qa' }],
        }).result;
        expect(r.text).toBe(' The capital of Belithne is Ulqua!');
      } finally {
        await engine.close();
      }
    },
  );

  it('size labels as gguf-py writes them', () => {
    expect([sizeLabel(853120), sizeLabel(1.1e9), sizeLabel(6.74e9), sizeLabel(125e6)]).toEqual([
      '853K',
      '1.1B',
      '6.7B',
      '125M',
    ]);
  });

  it('clear errors: architecture, pickles, truncated weights, no tokenizer, unknown pre-tokenizer', async () => {
    const src = path.join(modelDir('tiny-qwen2'), 'base-hf');
    const conv = (dir: string) => convertHfModel({ dir, out: path.join(tmp, 'x.gguf') });

    const gpt2 = path.join(tmp, 'gpt2');
    copyCheckpoint(src, gpt2);
    writeFileSync(path.join(gpt2, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'] }));
    await expect(conv(gpt2)).rejects.toThrow(
      /unsupported architecture 'GPT2LMHeadModel' \(supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, BloomForCausalLM\)/,
    );
    // A Llama checkpoint's tensors under a Bloom config are named, not mapped as Llama's.
    writeFileSync(
      path.join(gpt2, 'config.json'),
      JSON.stringify({
        architectures: ['BloomForCausalLM'],
        n_embed: 128,
        n_head: 4,
        n_layer: 4,
        layer_norm_epsilon: 1e-5,
      }),
    );
    await expect(conv(gpt2)).rejects.toThrow(/tensor 'model.embed_tokens.weight' has no llama.cpp counterpart/);

    const bin = path.join(tmp, 'bin');
    copyCheckpoint(src, bin);
    rmSync(path.join(bin, 'model.safetensors'));
    writeFileSync(path.join(bin, 'pytorch_model.bin'), 'x');
    await expect(conv(bin)).rejects.toThrow(/\.bin pickles are not read: save with safetensors/);

    const cut = path.join(tmp, 'cut');
    copyCheckpoint(src, cut);
    truncateSync(path.join(cut, 'model.safetensors'), 200_000);
    await expect(conv(cut)).rejects.toThrow(/truncated/);

    const notok = path.join(tmp, 'notok');
    copyCheckpoint(src, notok);
    rmSync(path.join(notok, 'tokenizer.json'));
    await expect(conv(notok)).rejects.toThrow(/no tokenizer\.model or tokenizer\.json/);

    const pre = path.join(tmp, 'pre');
    copyCheckpoint(src, pre);
    const tok = JSON.parse(readFileSync(path.join(pre, 'tokenizer.json'), 'utf8'));
    tok.pre_tokenizer.pretokenizers[0].pattern.Regex = '\\w+';
    writeFileSync(path.join(pre, 'tokenizer.json'), JSON.stringify(tok));
    await expect(conv(pre)).rejects.toThrow(/unknown pre-tokenizer/);
  });
});

describe('serving Hugging Face and PEFT directories', () => {
  it('converts the base once into the cache, reuses it, and rebuilds when the checkpoint changes', async () => {
    const cache = path.join(tmp, 'cache');
    const dir = path.join(tmp, 'served-hf');
    copyCheckpoint(path.join(modelDir('tiny-qa'), 'base-hf'), dir);
    const first = await locateBaseModel(dir, tmp, cache);
    expect(first.rule).toMatch(/Hugging Face checkpoint directory, converted into the cache/);
    expect((await locateBaseModel(dir, tmp, cache)).rule).toMatch(/reused from the cache/);
    utimesSync(path.join(dir, 'config.json'), new Date(), new Date(Date.now() + 5000));
    const rebuilt = await locateBaseModel(dir, tmp, cache);
    expect(rebuilt.path).not.toBe(first.path);
  });

  it('the server answers from base-hf + adapter-peft as from the GGUF files', async () => {
    process.env.CACHE_DIR = path.join(tmp, 'serve-cache');
    const s = await startServer(
      loadConfig(
        {},
        {
          port: 0,
          threads: 1,
          slots: 2,
          baseModel: path.join(modelDir('tiny-qa'), 'base-hf'),
          adapter: path.join(modelDir('tiny-qa'), 'adapter-peft'),
        },
      ),
      pino({ level: 'silent' }),
    );
    try {
      await s.ready;
      const res = await fetch(`http://127.0.0.1:${s.port}/predict`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          request: { prompt: 'Question: What is the capital of Belithne?\nAnswer:', do_sample: false },
        }),
      });
      expect(await res.json()).toEqual({ success: true, response: ' The capital of Belithne is Ulqua!' });
    } finally {
      await s.close();
      delete process.env.CACHE_DIR;
    }
  });
});
