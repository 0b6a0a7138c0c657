// The `generate` command as our checks call it: npm run --silent cli -- generate ... --json
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadReference, modelDir, root } from '../helpers.ts';

const run = promisify(execFile);
const cli = (args: string[]) =>
  run(process.execPath, [path.join(root, 'node_modules/tsx/dist/cli.mjs'), 'src/cli/main.ts', ...args], { cwd: root });

describe('cli generate', () => {
  const ref = loadReference('tiny-qa');
  const c = ref.cases.find((x) => x.mode === 'adapter')!;

  it('prints one JSON object with tokens, prompt_tokens and text', async () => {
    const { stdout } = await cli([
      'generate',
      '--model',
      path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
      '--adapter',
      path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'),
      '--scale',
      '1',
      '--prompt',
      c.prompt,
      '--max-tokens',
      '24',
      '--greedy',
      '--json',
      '--threads',
      '1',
      '--backend',
      'cpu',
    ]);
    const out = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(out.prompt_tokens).toEqual(c.prompt_ids);
    expect([...out.tokens, ref.eos]).toEqual(c.greedy_ids);
    expect(out.text).toBe(' The capital of Belithne is Ulqua!');
    expect(out.stop_reason).toBe('eos');
  });

  it('fails with a message and a non-zero exit code on bad input', async () => {
    const missing = await cli(['generate', '--model', '/no/such.gguf', '--prompt', 'x', '--threads', '1']).catch(
      (e) => e,
    );
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/MODEL_NOT_FOUND.*\/no\/such\.gguf/);
    const badArg = await cli(['generate', '--model', 'm.gguf', '--prompt', 'x', '--max-tokens', 'lots']).catch(
      (e) => e,
    );
    expect(badArg.code).not.toBe(0);
    expect(badArg.stderr).toMatch(/--max-tokens must be an integer/);
  });
});
