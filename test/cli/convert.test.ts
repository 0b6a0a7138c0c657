// The conversion commands in the exact shapes our checks call them.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import { modelDir, root } from '../helpers.ts';

const run = promisify(execFile);
const cli = (args: string[]) =>
  run(process.execPath, [path.join(root, 'node_modules/tsx/dist/cli.mjs'), 'src/cli/main.ts', ...args], { cwd: root });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-cli-convert-'));

describe('cli convert-model / convert-lora', () => {
  it('convert-model <hf-dir> --out <file.gguf> --outtype f16', async () => {
    const out = path.join(tmp, 'm.gguf');
    const { stderr } = await cli([
      'convert-model',
      path.join(modelDir('tiny-qa'), 'base-hf'),
      '--out',
      out,
      '--outtype',
      'f16',
    ]);
    expect(stderr).toMatch(/wrote .*m\.gguf: 39 tensors as f16, .* MB\/s/);
    expect((await readGgufHeader(out)).metadata.get('general.file_type')).toBe(1);
  });

  it("convert-model --outtype q4_k_m: the checkpoint, then llama.cpp's quantizer; no intermediate left", async () => {
    const dir = mkdtempSync(path.join(tmp, 'k-'));
    const out = path.join(dir, 'm-q4km.gguf');
    const { stderr } = await cli([
      'convert-model',
      path.join(modelDir('tiny-qa'), 'base-hf'),
      '--out',
      out,
      '--outtype',
      'q4_k_m',
      '--threads',
      '2',
    ]);
    expect(stderr).toMatch(/wrote .*m-q4km\.gguf: 39 tensors quantized to q4_k_m by llama.cpp on 2 threads/);
    expect((await readGgufHeader(out)).metadata.get('general.file_type')).toBe(15);
    expect(readdirSync(dir)).toEqual(['m-q4km.gguf']);
    await expect(
      cli(['convert-model', path.join(modelDir('tiny-qa'), 'base-hf'), '--out', out, '--outtype', 'q3_k']),
    ).rejects.toThrow(/--outtype must be one of auto, f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k/);
  });

  it('convert-lora <peft-dir> --base <hf-dir> --out <file.gguf>', async () => {
    const out = path.join(tmp, 'a.gguf');
    const { stderr } = await cli([
      'convert-lora',
      path.join(modelDir('tiny-qa'), 'adapter-peft'),
      '--base',
      path.join(modelDir('tiny-qa'), 'base-hf'),
      '--out',
      out,
    ]);
    expect(stderr).toMatch(/wrote .*a\.gguf: 56 tensors, alpha 16/);
    expect((await readGgufHeader(out)).metadata.get('general.type')).toBe('adapter');
  });

  it('merge-lora --model <gguf> --adapter <gguf> --out <file.gguf>', async () => {
    const out = path.join(tmp, 'merged.gguf');
    const args = [
      'merge-lora',
      '--model',
      path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
      '--adapter',
      path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'),
      '--out',
      out,
      '--backend',
      'cpu',
      '--threads',
      '1',
    ];
    const { stderr } = await cli(args);
    expect(stderr).toMatch(/wrote .*merged\.gguf: 28 of 39 tensors merged at scale 2\.000/);
    expect((await readGgufHeader(out)).metadata.get('cml.merged.scale')).toBe(1);
    const e = await cli([
      'merge-lora',
      '--model',
      out,
      '--adapter',
      path.join(modelDir('tiny-qwen2'), 'adapter-f32.gguf'),
      '--out',
      path.join(tmp, 'z.gguf'),
      '--backend',
      'cpu',
    ]).catch((x) => x);
    expect(e.code).not.toBe(0);
    expect(e.stderr).toMatch(/error \[ADAPTER_LOAD_FAILED\]: .*(qwen2|llama)/);
  });

  it('bad input: a message and a non-zero exit code', async () => {
    const e = await cli([
      'convert-model',
      path.join(modelDir('tiny-qa'), 'adapter-peft'),
      '--out',
      path.join(tmp, 'x.gguf'),
    ]).catch((x) => x);
    expect(e.code).not.toBe(0);
    expect(e.stderr).toMatch(/no config\.json/);
    const t = await cli([
      'convert-lora',
      path.join(modelDir('tiny-qa'), 'adapter-peft'),
      '--base',
      path.join(modelDir('tiny-qa'), 'base-hf'),
      '--out',
      path.join(tmp, 'y.gguf'),
      '--outtype',
      'q3',
    ]).catch((x) => x);
    expect(t.code).not.toBe(0);
    expect(t.stderr).toMatch(/--outtype must be f32, f16 or bf16/);
  });
});
