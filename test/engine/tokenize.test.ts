// Prompts tokenized as the studio's tokenizer(prompt) does: special-token text becomes its control
// token. Held to Hugging Face's own `tokenizers` (Rust, through @anush008/tokenizers) on the
// tiny-qwen2 checkpoint's tokenizer.json, through tokenize() and through a request's prompt.
import { Tokenizer } from '@anush008/tokenizers';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Engine, InvalidParamsError } from '../../src/engine/index.ts';
import { loadEngine, modelDir } from '../helpers.ts';

const chat = '<|im_start|>user\nWhat is the capital of Belithne?<|im_end|>\n<|im_start|>assistant\n';
const corpus = [
  chat,
  'Question: What is the capital of Belithne?<|endoftext|>',
  '<|im_end|><|im_start|>', // two specials, nothing between
  'before <|im_start|> after', // spaces around a special token
  '<|im_start', // a special token's text cut short is text
  'Question: What is the capital of Belithne?\nAnswer:',
];
const specialIds = [0, 1, 2]; // <|endoftext|>, <|im_start|>, <|im_end|>

describe('special-token text in prompts', () => {
  let engine: Engine;
  let hf: Tokenizer;
  beforeAll(async () => {
    engine = await loadEngine('tiny-qwen2');
    hf = Tokenizer.fromFile(path.join(modelDir('tiny-qwen2'), 'base-hf', 'tokenizer.json'));
  });
  afterAll(() => engine.close());

  it.each(corpus)('%j: the ids Hugging Face tokenizers gives', async (text) => {
    const want = (await hf.encode(text)).getIds();
    expect(engine.tokenize(text)).toEqual(want);
  });

  it('off, special-token text stays text (no control id), per call and per request', () => {
    const asText = engine.tokenize(chat, true, false);
    expect(asText.filter((t) => specialIds.includes(t))).toEqual([]);
    expect(asText.length).toBeGreaterThan(engine.tokenize(chat).length);
  });

  it('a request parses its text prompt the same way: the same answer as from the ids', async () => {
    const ids = (await hf.encode(chat)).getIds();
    const fromText = await engine.generate(chat, { greedy: true, maxTokens: 8 }).result;
    const fromIds = await engine.generate(ids, { greedy: true, maxTokens: 8 }).result;
    expect(fromText.usage.promptTokens).toBe(ids.length);
    expect(fromText.tokens).toEqual(fromIds.tokens);
    const asText = await engine.generate(chat, { greedy: true, maxTokens: 8, parseSpecial: false }).result;
    expect(asText.usage.promptTokens).toBe(engine.tokenize(chat, true, false).length);
  });

  it('an engine loaded with parseSpecial: false keeps the text by default; a request can still ask', async () => {
    const plain = await loadEngine('tiny-qwen2', { parseSpecial: false });
    try {
      expect(plain.tokenize(chat)).toEqual(engine.tokenize(chat, true, false));
      const r = await plain.generate(chat, { greedy: true, maxTokens: 1 }).result;
      expect(r.usage.promptTokens).toBe(engine.tokenize(chat, true, false).length);
      const asked = await plain.generate(chat, { greedy: true, maxTokens: 1, parseSpecial: true }).result;
      expect(asked.usage.promptTokens).toBe(engine.tokenize(chat).length);
    } finally {
      await plain.close();
    }
  });

  it('parseSpecial must be a boolean', () => {
    expect(() => engine.generate(chat, { maxTokens: 4, parseSpecial: 'yes' as never })).toThrow(InvalidParamsError);
  });
});
