// The command line: `generate` (one prompt, straight through the engine) and `serve`.
import { Command, InvalidArgumentError } from 'commander';
import { EngineError } from '../engine/index.ts';
import { runGenerate } from './generate.ts';

const program = new Command()
  .name('cml-lora-serve')
  .description('Serve a GGUF base model + LoRA adapter on llama.cpp, speaking the CML model contract')
  .showHelpAfterError();

export function intArg(name: string, min = Number.MIN_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

export function numArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
    return n;
  };
}

program
  .command('generate')
  .description('generate a continuation of one prompt')
  .requiredOption('--model <file.gguf>', 'GGUF base model')
  .option('--adapter <file.gguf>', 'GGUF LoRA adapter')
  .option('--scale <s>', 'adapter scale', numArg('--scale'), 1)
  .requiredOption('--prompt <text>', 'prompt text')
  .option('--max-tokens <n>', 'maximum new tokens', intArg('--max-tokens', 1), 60)
  .option('--greedy', 'greedy decoding (no sampling)', false)
  .option('--temperature <t>', 'sampling temperature', numArg('--temperature'))
  .option('--top-k <k>', 'top-k (0 = off)', intArg('--top-k', 0))
  .option('--top-p <p>', 'top-p', numArg('--top-p'))
  .option('--min-p <p>', 'min-p', numArg('--min-p'))
  .option('--repetition-penalty <r>', 'repetition penalty (Hugging Face semantics)', numArg('--repetition-penalty'))
  .option('--seed <n>', 'sampling seed', intArg('--seed', 0))
  .option('--stop <s...>', 'stop strings')
  .option('--logprobs <n>', 'top-n log-probabilities per token', intArg('--logprobs', 0))
  .option('--backend <b>', 'cpu | cuda | auto', 'auto')
  .option('--threads <n>', 'CPU threads', intArg('--threads', 1))
  .option('--gpu-layers <n>', 'layers on the GPU (-1 = all)', intArg('--gpu-layers', -1))
  .option('--context <n>', 'context tokens', intArg('--context', 16), 2048)
  .option('--json', 'print one JSON object (last line) instead of streaming text', false)
  .action(runGenerate);

program
  .command('serve')
  .description('serve the CML predict endpoint (arrives with the serving issue)')
  .action(() => {
    console.error('serve: the HTTP server is not part of this build yet; use `generate`.');
    process.exitCode = 2;
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const code = err instanceof EngineError ? ` [${err.code}]` : '';
  console.error(`error${code}: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
