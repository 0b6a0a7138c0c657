// The studio's own tokenizers (Llama 2, Mistral v0.3, as its adapter folders hold them): llama.cpp's
// tokenizer on the converted vocabulary against Hugging Face's tokenizers on tokenizer.json, on a
// corpus of hard strings. The table says where llama.cpp differs, and why serving prompts through
// the checkpoint's tokenizer.json (TOKENIZER=auto) is the default: there, every string matches.
import { Tokenizer } from '@anush008/tokenizers';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { openPredictor } from '../../src/cml/open.ts';
import type { Predictor } from '../../src/cml/predict.ts';
import { Engine } from '../../src/engine/index.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { testBackend, withCacheDir } from '../helpers.ts';
import { TOKENIZER_CORPUS } from './tokenizer-corpus.ts';
import { writeVocabCheckpoint } from './vocab-checkpoint.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-tok-'));

// Measured with llama.cpp as node-llama-cpp 3.21.1 bundles it. Llama 2 (legacy: false) and Mistral
// v0.3 drop the space SentencePiece would put after a special token; llama.cpp keeps it ('▁'). Mistral
// v0.3's Metaspace (prepend_scheme: first) also reads a leading space differently.
const LLAMA_CPP_DIFFERS: Record<string, string[]> = {
  'llama2-sql': ['text with <s> in the middle', '</s> at the start', '<unk> unknown'],
  'mistral-detox': [
    ' Hello world',
    '  two leading spaces',
    ' ',
    'text with <s> in the middle',
    '</s> at the start',
    '[INST] What is SQL? [/INST]',
    '<unk> unknown',
    '\u2581 literal metaspace',
  ],
};

describe.each(['llama2-sql', 'mistral-detox'] as const)("the studio's %s tokenizer", (folder) => {
  let dir: string;
  let hf: Tokenizer;
  let engine: Engine;
  beforeAll(async () => {
    dir = writeVocabCheckpoint(folder, path.join(tmp, folder));
    hf = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    await convertHfModel({ dir, out: path.join(tmp, `${folder}.gguf`) });
    engine = await Engine.load({
      modelPath: path.join(tmp, `${folder}.gguf`),
      backend: testBackend,
      threads: 1,
      contextSize: 256,
    });
  });
  afterAll(() => engine?.close());

  it(`llama.cpp's tokenizer differs from Hugging Face's on exactly ${LLAMA_CPP_DIFFERS[folder]!.length} of ${TOKENIZER_CORPUS.length} strings`, async () => {
    const differs: string[] = [];
    for (const s of TOKENIZER_CORPUS) {
      if (JSON.stringify(engine.tokenize(s)) !== JSON.stringify((await hf.encode(s)).getIds())) differs.push(s);
    }
    expect(differs).toEqual(LLAMA_CPP_DIFFERS[folder]);
  });

  it("served from the checkpoint (TOKENIZER=auto), every prompt gets the Hugging Face ids; TOKENIZER=llama, llama.cpp's", async () => {
    const open = (tokenizer: 'auto' | 'llama'): Promise<Predictor> =>
      withCacheDir(path.join(tmp, `cache-${folder}`), () =>
        openPredictor(loadConfig({}, { baseModel: dir, threads: 1, slots: 1, backend: testBackend, tokenizer }), {
          warn: () => {},
        }),
      );
    const auto = await open('auto');
    const llama = await open('llama');
    try {
      for (const s of LLAMA_CPP_DIFFERS[folder]!) {
        expect(await auto.promptFor(s), s).toEqual((await hf.encode(s)).getIds());
        expect(await llama.promptFor(s), s).toBe(s); // the text, for llama.cpp to tokenize
        const r = await (await auto.start({ prompt: s, max_new_tokens: 1, do_sample: false })).result;
        expect(r.usage.promptTokens, s).toBe((await hf.encode(s)).getIds().length);
      }
      // parse_special: false keeps special-token text as text, which only llama.cpp's tokenizer can do.
      expect(await auto.promptFor('<s>', false)).toBe('<s>');
    } finally {
      await auto.engine.close();
      await llama.engine.close();
    }
  });
});

// Decoding: llama.cpp renders a special token's following space where Mistral v0.3's decoder drops it.
const DETOKENIZE_DIFFERS: Record<string, string[]> = {
  'llama2-sql': [],
  'mistral-detox': ['[INST] What is SQL? [/INST]'],
};

describe.each(['llama2-sql', 'mistral-detox'] as const)('%s as tokenizer.json alone (no tokenizer.model)', (folder) => {
  let hf: Tokenizer;
  let engine: Engine;
  beforeAll(async () => {
    const dir = writeVocabCheckpoint(folder, path.join(tmp, `${folder}-json`));
    rmSync(path.join(dir, 'tokenizer.model'));
    hf = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    await convertHfModel({ dir, out: path.join(tmp, `${folder}-json.gguf`) });
    engine = await Engine.load({
      modelPath: path.join(tmp, `${folder}-json.gguf`),
      backend: testBackend,
      threads: 1,
      contextSize: 256,
    });
  });
  afterAll(() => engine?.close());

  it('converts, and llama.cpp tokenizes as from tokenizer.model: the merges order stands in for the scores', async () => {
    const differs: string[] = [];
    for (const s of TOKENIZER_CORPUS) {
      if (JSON.stringify(engine.tokenize(s)) !== JSON.stringify((await hf.encode(s)).getIds())) differs.push(s);
    }
    expect(differs).toEqual(LLAMA_CPP_DIFFERS[folder]);
  });

  it("generated ids read back as Hugging Face's decode reads them", async () => {
    const differs: string[] = [];
    for (const s of TOKENIZER_CORPUS) {
      const ids = (await hf.encode(s)).getIds();
      if (engine.detokenize(ids.filter((t) => t > 2)) !== (await hf.decode(ids, true))) differs.push(s);
    }
    expect(differs).toEqual(DETOKENIZE_DIFFERS[folder]);
  });
});
