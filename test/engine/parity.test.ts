// Ground truth: what transformers + PEFT generate for the fixtures (models/*/reference.json).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../../src/engine/index.ts';
import {
  againstReference,
  exactNumerics,
  loadEngine,
  loadReference,
  modelDir,
  runCase,
  testBackend,
  type Fixture,
} from '../helpers.ts';

describe.each([
  // tiny-qwen2's adapter-f32.gguf is llama.cpp's converter output, which ignores rslora (alpha/sqrt(r))
  // and keeps alpha 16: its cases run at a runtime scale of sqrt(8) to make up for it. Our converter
  // folds the scaling into lora_b instead (test/intake/peft.test.ts).
  { fixture: 'tiny-qa' as Fixture, unit: 1 },
  { fixture: 'tiny-qwen2' as Fixture, unit: Math.sqrt(8) },
])('$fixture parity with transformers + PEFT', ({ fixture, unit }) => {
  // Measured worst gaps: 4.2e-6 to 1.36e-5 on the CPU (this VM, both fixtures, all three modes); a
  // GPU's kernels differ (the H200 run stayed within 1e-3).
  const tolerance = testBackend === 'cpu' ? 5e-5 : 1e-3;
  const ref = loadReference(fixture);
  let engine: Engine;

  beforeAll(async () => {
    // Exact numerics (see exactNumerics): CPU flash attention alone moves log-probabilities by ~1e-3.
    // The default-precision run is checked below.
    engine = await loadEngine(fixture, { slots: 1, ...exactNumerics });
    await engine.loadAdapter('lora', `${modelDir(fixture)}/adapter-f32.gguf`);
  });
  afterAll(() => engine?.close());

  it('tokenizes every prompt exactly as the Hugging Face tokenizer', () => {
    const wrong = ref.cases.filter((c) => JSON.stringify(engine.tokenize(c.prompt)) !== JSON.stringify(c.prompt_ids));
    expect(wrong.map((c) => c.prompt)).toEqual([]);
  });

  for (const mode of ['base', 'adapter', 'adapter@0.5'] as const) {
    it(`greedy ids and first-step log-probabilities match (${mode})`, async () => {
      const cases = ref.cases.filter((c) => c.mode === mode);
      const r = await againstReference(engine, cases, ref.eos, unit);
      expect(r.worst, r.summary).toBeLessThan(tolerance);
      // At most one near-tie miss per mode (the fixtures' own measurement: 92/93 with llama.cpp).
      expect(r.exact / cases.length, `${r.summary}\n${r.misses.join('\n')}`).toBeGreaterThanOrEqual(
        Math.min(0.97, (cases.length - 1) / cases.length),
      );
    });
  }

  it('keeps greedy agreement at the default precision (f16 KV cache, flash attention auto)', async () => {
    const fast = await loadEngine(fixture, { slots: 1 });
    try {
      await fast.loadAdapter('lora', `${modelDir(fixture)}/adapter-f32.gguf`);
      const r = await againstReference(fast, ref.cases, ref.eos, unit);
      if (testBackend !== 'cpu')
        console.info(`${fixture} at the default precision on ${fast.backend.name}: ${r.summary}`);
      expect(r.exact / ref.cases.length, `${r.summary}\n${r.misses.join('\n')}`).toBeGreaterThanOrEqual(0.97);
    } finally {
      await fast.close();
    }
  });

  it('streams exactly the detokenized ids, prompt not echoed', async () => {
    const c = ref.cases.find((x) => x.mode === 'adapter')!;
    const { result } = await runCase(engine, c, ref.eos, unit);
    // The continuation as the prompt + output decode to (what CML's api_wrapper returns), so a
    // SentencePiece word-start space is kept; greedy_text decodes the output alone and drops it.
    const prompt = engine.tokenize(c.prompt);
    expect(engine.detokenize(prompt) + result.text).toBe(engine.detokenize([...prompt, ...result.tokens]));
    expect(result.text.trim()).toBe(c.greedy_text.trim());
    expect(result.text.startsWith(c.prompt)).toBe(false);
  });
});
