// Grammar-constrained sampling (llama.cpp's grammar sampler inside our sampler): what comes out is
// what the grammar allows, greedy or sampled; a grammar that does not parse is the request's error.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Engine, InvalidParamsError } from '../../src/engine/index.ts';
import { loadEngine, loadReference, root } from '../helpers.ts';

const question = loadReference('tiny-qa').cases[0]!.prompt;

describe('grammar', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await loadEngine('tiny-qa', { slots: 2 });
  });
  afterAll(() => engine.close());

  it('greedy and sampled outputs are words of the grammar, not what the model says unconstrained', async () => {
    const grammar = 'root ::= (" yes" | " no" | " maybe") "."';
    const free = await engine.generate(question, { greedy: true, maxTokens: 12 }).result;
    expect([' yes.', ' no.', ' maybe.']).not.toContain(free.text);
    const greedy = await engine.generate(question, { greedy: true, maxTokens: 12, grammar }).result;
    expect([' yes.', ' no.', ' maybe.']).toContain(greedy.text);
    expect(greedy.stopReason).toBe('eos'); // complete: only the end could follow
    for (const seed of [1, 2, 3, 4, 5]) {
      const r = await engine.generate(question, { temperature: 1.5, seed, maxTokens: 12, grammar }).result;
      expect([' yes.', ' no.', ' maybe.'], `seed ${seed}`).toContain(r.text);
    }
  });

  it("llama.cpp's JSON grammar: the output parses", async () => {
    const grammar = readFileSync(path.join(root, 'node_modules/node-llama-cpp/llama/grammars/json.gbnf'), 'utf8');
    const r = await engine.generate(question, { temperature: 1, seed: 7, maxTokens: 60, grammar }).result;
    if (r.stopReason === 'eos') expect(() => JSON.parse(r.text)).not.toThrow();
    else expect(r.text.startsWith('{')).toBe(true); // cut by maxTokens: a JSON object, begun
  });

  it('a grammar that is complete before minTokens ends the request there (nothing else is allowed)', async () => {
    const r = await engine.generate(question, { greedy: true, maxTokens: 12, minTokens: 6, grammar: 'root ::= " yes"' })
      .result;
    expect(r).toMatchObject({ text: ' yes', stopReason: 'eos' });
    // The engine serves on.
    expect((await engine.generate(question, { greedy: true, maxTokens: 3 }).result).tokens).toHaveLength(3);
  });

  it('a grammar that does not parse is an InvalidParamsError, before anything runs', () => {
    expect(() => engine.generate(question, { maxTokens: 4, grammar: 'root ::= ("a"' })).toThrow(InvalidParamsError);
    expect(() => engine.generate(question, { maxTokens: 4, grammar: 'root ::= ("a"' })).toThrow(
      /grammar does not parse/,
    );
    expect(() => engine.generate(question, { maxTokens: 4, grammar: 7 as never })).toThrow(/grammar must be a string/);
  });
});
