import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EMBEDDED, loadConfig } from '../../src/cml/config.ts';
import { locateAdapter, locateBaseModel } from '../../src/cml/locate.ts';
import { modelDir } from '../helpers.ts';

const qa = modelDir('tiny-qa');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-locate-'));
const empty = path.join(tmp, 'models');
mkdirSync(empty);

describe('base model location', () => {
  it('a .gguf path', async () => {
    expect(await locateBaseModel(path.join(qa, 'base-f32.gguf'), empty)).toEqual({
      path: path.join(qa, 'base-f32.gguf'),
      rule: 'a .gguf file path',
    });
  });
  it('a directory holding one model GGUF (adapters beside it are not models)', async () => {
    expect((await locateBaseModel(qa, empty)).path).toBe(path.join(qa, 'base-f32.gguf'));
  });
  it('the first part of a split set', async () => {
    const dir = path.join(tmp, 'split');
    mkdirSync(dir);
    copyFileSync(path.join(qa, 'base-f32.gguf'), path.join(dir, 'm-00001-of-00002.gguf'));
    copyFileSync(path.join(qa, 'base-f32.gguf'), path.join(dir, 'm-00002-of-00002.gguf'));
    expect((await locateBaseModel(dir, empty)).path).toBe(path.join(dir, 'm-00001-of-00002.gguf'));
  });
  it('MODELS_DIR/<org>/<name>/', async () => {
    const dir = path.join(tmp, 'zoo', 'acme', 'tiny');
    mkdirSync(dir, { recursive: true });
    copyFileSync(path.join(qa, 'base-f32.gguf'), path.join(dir, 'model.gguf'));
    expect(await locateBaseModel('acme/tiny', path.join(tmp, 'zoo'))).toEqual({
      path: path.join(dir, 'model.gguf'),
      rule: 'MODELS_DIR/acme/tiny',
    });
  });
  it('a Hugging Face checkpoint is converted (test/intake); one that cannot be says why', async () => {
    const dir = path.join(tmp, 'gpt2-hf');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'] }));
    await expect(locateBaseModel(dir, empty, path.join(tmp, 'cache'))).rejects.toThrow(
      /unsupported architecture 'GPT2LMHeadModel'/,
    );
  });
  it('nothing found: the error lists every place tried', async () => {
    const err = (await locateBaseModel('NousResearch/Llama-2-7b-hf', empty).catch((e: Error) => e)) as Error;
    expect(err.message).toContain(path.resolve('NousResearch/Llama-2-7b-hf'));
    expect(err.message).toContain(path.join(empty, 'NousResearch/Llama-2-7b-hf'));
    expect(err.message).toMatch(/Hugging Face cache/);
  });
  it('two models in one directory is ambiguous', async () => {
    const dir = path.join(tmp, 'two');
    mkdirSync(dir);
    copyFileSync(path.join(qa, 'base-f32.gguf'), path.join(dir, 'a.gguf'));
    copyFileSync(path.join(qa, 'base-f32.gguf'), path.join(dir, 'b.gguf'));
    await expect(locateBaseModel(dir, empty)).rejects.toThrow(/several model GGUF files \(a\.gguf, b\.gguf\)/);
  });
});

describe('adapter location', () => {
  it('a GGUF file, or a directory holding one', async () => {
    expect((await locateAdapter(path.join(qa, 'adapter-f32.gguf'))).path).toBe(path.join(qa, 'adapter-f32.gguf'));
    expect((await locateAdapter(qa)).path).toBe(path.join(qa, 'adapter-f32.gguf'));
  });
  it('a PEFT directory is converted against the base (test/intake); without a base it is a clear error', async () => {
    await expect(locateAdapter(path.join(qa, 'adapter-peft'))).rejects.toThrow(
      /PEFT adapter directory; converting it needs the base model/,
    );
  });
  it('a Hub id says to download it first', async () => {
    await expect(locateAdapter('someone/my-adapter')).rejects.toThrow(/Hub id: download it first/);
  });
  it('other files and missing paths', async () => {
    const txt = path.join(tmp, 'notes.txt');
    writeFileSync(txt, 'x');
    await expect(locateAdapter(txt)).rejects.toThrow(/not a \.gguf file/);
    await expect(locateAdapter(path.join(tmp, 'nope'))).rejects.toThrow(/does not exist/);
  });
});

describe('loadConfig', () => {
  it('nothing set: the embedded tiny-qa base + adapter, port 8080 on loopback', () => {
    expect(loadConfig({})).toMatchObject({
      baseModel: EMBEDDED.baseModel,
      adapter: EMBEDDED.adapter,
      port: 8080,
      host: '127.0.0.1',
      apiKey: null,
    });
  });
  it('studio names and their aliases', () => {
    const c = loadConfig({
      FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME: 'b.gguf',
      ADAPTER_LOCATION: 'a.gguf',
      GEN_CONFIG_STRING: "{'max_new_tokens': 5}",
      PORT: '9000',
      API_KEY: 'k',
    });
    expect(c).toMatchObject({
      baseModel: 'b.gguf',
      adapter: 'a.gguf',
      genConfig: { max_new_tokens: 5 },
      port: 9000,
      apiKey: 'k',
    });
    expect(c.warnings).toEqual([expect.stringMatching(/single quotes/)]);
  });
  it('a base model without an adapter serves the base alone; flags win over env', () => {
    expect(loadConfig({ FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME: 'b.gguf' }).adapter).toBeNull();
    expect(loadConfig({ PORT: '9000' }, { port: 7 }).port).toBe(7);
  });
  it('bad numbers are errors', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/PORT must be an integer/);
    expect(() => loadConfig({ BACKEND: 'tpu' })).toThrow(/BACKEND/);
    expect(() => loadConfig({ MERGE_ADAPTER: 'maybe' })).toThrow(/MERGE_ADAPTER/);
  });
  it('the adapter is merged unless MERGE_ADAPTER=off (or --no-merge)', () => {
    expect(loadConfig({}).mergeAdapter).toBe(true);
    expect(loadConfig({ MERGE_ADAPTER: 'off' }).mergeAdapter).toBe(false);
    expect(loadConfig({}, { mergeAdapter: false }).mergeAdapter).toBe(false);
  });
});
