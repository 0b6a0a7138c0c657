// llama.cpp's quantizer through the addon (quantizeModel): each type writes its file type, loads,
// and stays close to the f32 model; bad inputs are typed errors and leave nothing behind.
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidParamsError, ModelLoadError, QUANT_TYPES, quantizeModel } from '../../src/engine/index.ts';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { exactNumerics, loadEngine, loadReference, modelDir, testBackend } from '../helpers.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-quant-'));
const f32 = path.join(modelDir('tiny-qa'), 'base-f32.gguf');
const FILE_TYPE = { q4_0: 2, q8_0: 7, q4_k_m: 15, q5_k_m: 17, q6_k: 18 };

describe("quantizeModel (llama.cpp's quantizer)", () => {
  const cases = loadReference('tiny-qa')
    .cases.filter((c) => c.mode === 'base')
    .slice(0, 6);

  it.each(QUANT_TYPES)("%s: its file type, smaller, and the f32 model's greedy answers", async (type) => {
    const out = path.join(tmp, `qa-${type}.gguf`);
    let last = 0;
    const r = await quantizeModel({
      input: f32,
      output: out,
      type,
      threads: 2,
      backend: testBackend,
      onProgress: (f) => (last = f),
    });
    expect(r.tensors).toBe(39);
    expect(last).toBe(1);
    const h = await readGgufHeader(out);
    expect(h.metadata.get('general.file_type')).toBe(FILE_TYPE[type]);
    const engine = await loadEngine('tiny-qa', { modelPath: out, ...exactNumerics });
    try {
      let same = 0;
      for (const c of cases) {
        const got = await engine.generate(c.prompt_ids, { greedy: true, maxTokens: 24 }).result;
        if (JSON.stringify(got.tokens) === JSON.stringify(c.greedy_ids.slice(0, got.tokens.length))) same++;
      }
      // Measured: every type keeps all six answers of this trained toy (128 wide: the K-quants fall
      // back to other block types for rows not a multiple of 256, as llama.cpp does).
      expect(same).toBe(cases.length);
    } finally {
      await engine.close();
    }
  });

  it('bad type, missing input: typed errors, nothing left behind', async () => {
    const dir = mkdtempSync(path.join(tmp, 'bad-'));
    const output = path.join(dir, 'x.gguf');
    await expect(quantizeModel({ input: f32, output, type: 'q3_k' as never, backend: testBackend })).rejects.toThrow(
      InvalidParamsError,
    );
    await expect(quantizeModel({ input: f32, output, type: 'q3_k' as never, backend: testBackend })).rejects.toThrow(
      /type must be one of q4_0, q8_0, q4_k_m, q5_k_m, q6_k/,
    );
    await expect(
      quantizeModel({ input: path.join(dir, 'none.gguf'), output, type: 'q8_0', backend: testBackend }),
    ).rejects.toThrow(ModelLoadError);
    expect(readdirSync(dir)).toEqual([]);
  });
});
