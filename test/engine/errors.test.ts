// Bad files and bad parameters become typed errors, and the engine keeps serving afterwards.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AdapterError,
  ContextOverflowError,
  EngineClosedError,
  InvalidParamsError,
  ModelLoadError,
  QueueFullError,
  type Engine,
} from '../../src/engine/index.ts';
import { chunksOf, loadEngine, modelDir } from '../helpers.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-errors-'));
const base = path.join(modelDir('tiny-qa'), 'base-f32.gguf');
const prompt = 'Question: What is the capital of Belithne?\nAnswer:';

function writeTmp(name: string, data: Buffer | string): string {
  const p = path.join(tmp, name);
  writeFileSync(p, data);
  return p;
}

describe('model files', () => {
  const load = (modelPath: string) => loadEngine('tiny-qa', { modelPath });

  it('missing file', async () => {
    await expect(load(path.join(tmp, 'nope.gguf'))).rejects.toMatchObject({
      name: 'ModelLoadError',
      code: 'MODEL_NOT_FOUND',
    });
  });

  it('a directory, and a file that is not GGUF', async () => {
    await expect(load(tmp)).rejects.toBeInstanceOf(ModelLoadError);
    await expect(load(writeTmp('text.gguf', 'hello, not a model'))).rejects.toMatchObject({ code: 'MODEL_INVALID' });
  });

  it("a truncated GGUF carries llama.cpp's reason", async () => {
    const whole = readFileSync(base);
    const err = await load(writeTmp('cut.gguf', whole.subarray(0, whole.length / 2))).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toMatch(/llama\.cpp could not load .*cut\.gguf: .+/);
  });

  it('a GGUF header with garbage after it', async () => {
    const err = await load(writeTmp('junk.gguf', Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(64, 0xff)]))).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.message.length).toBeGreaterThan(40);
  });

  it('an unsupported architecture', async () => {
    // Same file with general.architecture renamed in place ("llama" -> "llamb"): same length, valid GGUF.
    const buf = Buffer.from(readFileSync(base));
    const key = buf.indexOf('general.architecture');
    const value = buf.indexOf('llama', key);
    buf.write('llamb', value);
    const err = await load(writeTmp('arch.gguf', buf)).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.message).toMatch(/llamb/);
  });

  it('bad engine options are InvalidParamsError, before anything loads', async () => {
    for (const [opts, why] of [
      [{ slots: 0 }, /slots must be an integer in \[1, 256\]/],
      [{ fillGap: 999 }, /fillGap must be an integer in \[-1, 256\]/],
      [{ batchSize: 'big' as never }, /batchSize must be an integer in \[1, 65536\]/],
      [{ threads: 1.5 }, /threads must be an integer/],
      // A string option names its choices.
      [{ flashAttention: 'maybe' as never }, /^flashAttention must be 'auto', 'on' or 'off'$/],
      [{ kvCacheType: 'q4_0' as never }, /^kvCacheType must be 'f16', 'f32' or 'q8_0'$/],
      [{ adapterBankLayout: 'flat' as never }, /^adapterBankLayout must be 'auto', 'stacked' or 'gathered'$/],
      [{ adapterBank: 65 }, /adapterBank must be an integer in \[0, 64\]/],
    ] as const) {
      const err = await loadEngine('tiny-qa', opts).catch((e) => e);
      expect(err).toBeInstanceOf(InvalidParamsError);
      expect(err.message).toMatch(why);
    }
  });
});

describe('requests and adapters', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await loadEngine('tiny-qa', { slots: 2, maxQueue: 1, contextSize: 64 });
  });
  afterAll(() => engine?.close());

  it('rejects an adapter that does not fit the model, with the reason', async () => {
    const err = await engine.loadAdapter('qwen', path.join(modelDir('tiny-qwen2'), 'adapter-f32.gguf')).catch((e) => e);
    expect(err).toBeInstanceOf(AdapterError);
    expect(err.message).toMatch(/cannot load adapter 'qwen'.*: .+/);
    await expect(engine.loadAdapter('x', path.join(tmp, 'none.gguf'))).rejects.toBeInstanceOf(AdapterError);
    await expect(engine.loadAdapter('x', base)).rejects.toBeInstanceOf(AdapterError); // a model, not a LoRA
    expect(engine.adapters()).toEqual([]);
  });

  it.each([
    [{ temperature: -1 }, /temperature/],
    [{ temperature: Number.NaN }, /temperature/],
    [{ topP: 0 }, /topP/],
    [{ topK: -3 }, /topK/],
    [{ maxTokens: 0 }, /maxTokens/],
    [{ maxTokens: 1.5 }, /maxTokens/],
    [{ repetitionPenalty: 0 }, /repetitionPenalty/],
    [{ seed: -1 }, /seed/],
    [{ stop: 'x' }, /stop/],
    [{ logprobs: 99 }, /logprobs/],
    [{ logitBias: { 99999: 1 } }, /logitBias/],
    [{ greedy: 'yes' }, /greedy/],
    [{ adapters: [{ scale: 1 }] }, /name/],
  ])('bad params %j throw InvalidParamsError', (params, message) => {
    expect(() => engine.generate(prompt, params as never)).toThrow(InvalidParamsError);
    expect(() => engine.generate(prompt, params as never)).toThrow(message);
  });

  it('bad prompts and unknown adapters', () => {
    expect(() => engine.generate(42 as never)).toThrow(InvalidParamsError);
    expect(() => engine.generate([1, 9999])).toThrow(
      /prompt must hold integer token ids in \[0, \d+\), got 9999 at \[1\]/,
    );
    for (const bad of [
      [1, 1.5],
      [1, -1],
      [1, Number.NaN],
      [1, '2'],
      [1, null],
    ]) {
      expect(() => engine.generate(bad as never), JSON.stringify(bad)).toThrow(InvalidParamsError);
    }
    // A truthy non-boolean is refused, not read as true ("false" is truthy).
    expect(() => engine.generate(prompt, { maxTokens: 4, addSpecial: 'false' as never })).toThrow(
      /addSpecial must be a boolean/,
    );
    expect(() => engine.tokenize(prompt, 0 as never)).toThrow(/addSpecial must be a boolean/);
    expect(() => engine.detokenize('1' as never)).toThrow(/ids must be an array of token ids/);
    expect(() => engine.detokenize([0.5])).toThrow(InvalidParamsError);
    expect(() => engine.generate([])).toThrow(/empty/);
    expect(() => engine.generate(prompt, { adapters: [{ name: 'nope' }] })).toThrow(AdapterError);
  });

  it('context overflow is an error, not a truncation', async () => {
    // The 64 asked for, though llama.cpp rounds a slot's cells up to 256: a request gets what was asked.
    const n = engine.model.contextPerSlot;
    expect(n).toBe(64);
    expect(() => engine.generate(prompt, { maxTokens: n })).toThrow(ContextOverflowError);
    expect(() => engine.generate(prompt, { maxTokens: n })).toThrow(`exceeds the context of ${n} tokens per slot`);
    await expect(engine.generate(prompt, { maxTokens: n - 16 }).result).resolves.toBeDefined();
  });

  it('a full queue is QueueFullError', async () => {
    const running = [0, 1, 2].map(() => engine.generate(prompt, { maxTokens: 40, ignoreEos: true }));
    expect(() => engine.generate(prompt, { maxTokens: 4 })).toThrow(QueueFullError);
    await Promise.all(running.map((g) => g.result));
  });

  it('still serves after all of that', async () => {
    const r = await engine.generate(prompt, { greedy: true, maxTokens: 10 }).result;
    expect(r.text).toBe(' Vegri.');
  });

  it('closing ends queued requests with EngineClosedError', async () => {
    const other = await loadEngine('tiny-qa', { slots: 1 });
    const gens = [0, 1].map(() => other.generate(prompt, { maxTokens: 200, ignoreEos: true }));
    await other.close();
    const settled = await Promise.allSettled(gens.map((g) => g.result));
    expect(settled.some((s) => s.status === 'rejected' && s.reason instanceof EngineClosedError)).toBe(true);
    expect(() => other.generate(prompt)).toThrow(EngineClosedError);
  });
});

describe('UTF-8 and stop strings', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await loadEngine('tiny-qwen2');
  });
  afterAll(() => engine?.close());

  it('a character split over byte tokens is streamed whole, never half', async () => {
    // '€' is three byte tokens in Qwen2's byte-level BPE. Biasing them in descending order and
    // penalizing repeats makes greedy decoding emit exactly E2, 82, AC: a real multi-byte output.
    const ids = engine.tokenize('€', false);
    expect(ids).toHaveLength(3);
    const logitBias = Object.fromEntries(ids.map((t, i) => [t, 60 - 10 * i]));
    const g = engine.generate(prompt, { greedy: true, maxTokens: 6, logitBias, repetitionPenalty: 1000 });
    const chunks: { text: string; token: number | null }[] = [];
    for await (const c of g) chunks.push(c);
    expect(chunks.slice(0, 3)).toEqual([
      { text: '', token: ids[0] },
      { text: '', token: ids[1] },
      { text: '€', token: ids[2] },
    ]);
    for (const c of chunks) expect(c.text).not.toContain('\uFFFD');
    expect((await g.result).text.startsWith('€')).toBe(true);
  });

  it('stop strings end generation and are not emitted, even across tokens', async () => {
    const free = await engine.generate(prompt, { greedy: true, maxTokens: 20 }).result;
    expect(free.text).toBe(' Vegri.');
    const g = engine.generate(prompt, { greedy: true, maxTokens: 20, stop: ['gri.'] });
    const chunks = await chunksOf(g);
    const r = await g.result;
    expect(r).toMatchObject({ text: ' Ve', stopReason: 'stop', stopString: 'gri.' });
    expect(chunks.join('')).toBe(' Ve');
  });

  it('a held-back stop prefix that never completes is released at the end', async () => {
    const r = await engine.generate(prompt, { greedy: true, maxTokens: 20, stop: ['.x'] }).result;
    expect(r).toMatchObject({ text: ' Vegri.', stopReason: 'eos' });
  });
});

describe('every native code has its class', () => {
  it('ALREADY_LOADED and LOADING are EngineStateError; an unknown backend is a BackendError', async () => {
    const { EngineStateError, BackendError, fromNative, resolveBackend } = await import('../../src/engine/index.ts');
    expect(fromNative({ code: 'ALREADY_LOADED', message: 'load() may be called once' })).toBeInstanceOf(
      EngineStateError,
    );
    expect(fromNative({ code: 'LOADING', message: 'close() while the model is loading' })).toBeInstanceOf(
      EngineStateError,
    );
    expect(() => resolveBackend('tpu' as never)).toThrow(BackendError);
    expect(() => resolveBackend('tpu' as never)).toThrow("backend must be cpu, cuda or auto, got 'tpu'");
  });
});
