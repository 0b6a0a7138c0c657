// Bloom, the studio's default base family (bigscience/bloom-1b1): a checkpoint in Bloom's real
// layout converted and run, held to a numpy forward pass written from transformers'
// modeling_bloom.py, its tokenizer to Hugging Face's tokenizers, and the studio's Bloom adapter
// served over POST /predict from the HF and PEFT directories.
import { Tokenizer } from '@anush008/tokenizers';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import type { Engine } from '../../src/engine/index.ts';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { startServer } from '../../src/server/server.ts';
import { exactNumerics, loadEngine } from '../helpers.ts';
import { type BloomFixture, writeBloomFixture } from './bloom-fixture.ts';
import { numpyForward } from './reference.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-bloom-'));
const numpy = numpyForward;

const corpus = [
  'The capital of Belithne is Ulqua!',
  'the capital, and the capital. Of the capital?',
  '  two spaces,\ttabs\tand\nnew lines\n\n',
  '(parens) [brackets] a|b {braces}',
  '…ellipsis。中文，标点、और।',
  'numbers 12345 and trailing   ',
  '<s>specials</s> inside',
];

describe('Bloom: convert-model, tokenizer, numerics, the studio adapter served', () => {
  let fx: BloomFixture;
  let gguf: string;
  let hf: Tokenizer;
  let engine: Engine;
  beforeAll(async () => {
    fx = writeBloomFixture(tmp);
    gguf = path.join(tmp, 'bloom.gguf');
    await convertHfModel({ dir: fx.base, out: gguf });
    hf = Tokenizer.fromFile(path.join(fx.base, 'tokenizer.json'));
    engine = await loadEngine('tiny-qa', { modelPath: gguf, ...exactNumerics });
  });
  afterAll(() => engine?.close());

  it("writes llama.cpp's Bloom hyperparameters and the bloom pre-tokenizer", async () => {
    const m = (await readGgufHeader(gguf)).metadata;
    expect(Object.fromEntries([...m].filter(([k]) => k.startsWith('bloom.') || k === 'tokenizer.ggml.pre'))).toEqual({
      'bloom.context_length': 64, // BloomModel: seq_length, else n_embd
      'bloom.embedding_length': 64,
      'bloom.feed_forward_length': 256,
      'bloom.block_count': 2,
      'bloom.attention.head_count': 4,
      'bloom.attention.head_count_kv': 4,
      'bloom.attention.layer_norm_epsilon': expect.closeTo(1e-5, 9),
      'tokenizer.ggml.pre': 'bloom',
    });
  });

  it.each(corpus)('%j: the ids Hugging Face tokenizers gives', async (text) => {
    expect(engine.tokenize(text)).toEqual((await hf.encode(text)).getIds());
  });

  // ggml's CPU GELU goes through a float16 table (input and output rounded). The reference rounds
  // alike, but a pre-activation summed in float32 there and float64 here can land on either side of
  // a float16 rounding boundary: one ulp (~1e-3 relative) in one activation, seen as up to 4.6e-4
  // in a log-probability (8.5e-6 on other weights). Hence 1e-3 here, where the rope tests hold 1e-4.
  it('first-token log-probabilities within 1e-3 of the reference (with ggml CPU GELU rounding)', async () => {
    const prompts = await Promise.all(corpus.slice(0, 4).map(async (t) => (await hf.encode(t)).getIds()));
    const ggml = numpy({ dir: fx.base, prompts, gelu: 'ggml-f16' }).logprobs as number[][];
    const exact = numpy({ dir: fx.base, prompts }).logprobs as number[][];
    let fromExact = 0;
    for (const [i, ids] of prompts.entries()) {
      const r = await engine.generate(ids, { greedy: true, maxTokens: 1, logprobs: 20 }).result;
      const top = r.logprobs![0]!.top;
      expect(top[0]!.token).toBe(ggml[i]!.indexOf(Math.max(...ggml[i]!)));
      for (const t of top) {
        expect(Math.abs(t.logprob - ggml[i]![t.token]!), `prompt ${i} token ${t.token}`).toBeLessThan(1e-3);
        fromExact = Math.max(fromExact, Math.abs(t.logprob - exact[i]![t.token]!));
      }
    }
    // Against transformers' own GELU (no float16 table): the table's rounding alone.
    expect(fromExact).toBeLessThan(2e-2);
  });

  it("POST /predict from the checkpoint and the studio's Bloom adapter answers as the references, adapter and base", async () => {
    // Prompts where the adapter changes the greedy answer (and both answers are whole characters).
    const greedy = async (dir: string, prompt: string) => {
      const ids = (await hf.encode(prompt)).getIds();
      const out = (numpy({ dir, prompts: [ids], greedy: 8, gelu: 'ggml-f16' }).greedy as number[][])[0]!;
      return hf.decode(
        out.filter((t) => t > 3),
        true,
      );
    };
    const cases = [
      { prompt: 'Belithne', adapter: undefined, want: await greedy(fx.merged, 'Belithne') },
      { prompt: 'Of the', adapter: null, want: await greedy(fx.base, 'Of the') },
    ];
    expect(cases[0]!.want).not.toBe(await greedy(fx.base, 'Belithne'));
    process.env.CACHE_DIR = path.join(tmp, 'serve-cache');
    const s = await startServer(
      loadConfig({}, { port: 0, threads: 1, slots: 1, baseModel: fx.base, adapter: fx.adapter }),
      pino({ level: 'silent' }),
    );
    try {
      await s.ready;
      for (const c of cases) {
        const res = await fetch(`http://127.0.0.1:${s.port}/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          // Greedy without the studio's default repetition penalty (1.1), which the reference lacks.
          body: JSON.stringify({
            request: {
              prompt: c.prompt,
              adapter: c.adapter,
              do_sample: false,
              repetition_penalty: 1,
              max_new_tokens: 8,
            },
          }),
        });
        expect(await res.json(), c.prompt).toEqual({ success: true, response: c.want });
      }
    } finally {
      await s.close();
      delete process.env.CACHE_DIR;
    }
  });
});
