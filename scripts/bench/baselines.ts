// The baselines, on the same model and settings in the same run: node-llama-cpp's own API,
// llama.cpp's llama-bench and llama-batched-bench (built from the same source tree as our CUDA
// addon), and the memory-bandwidth bound.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, steadyRate } from './stats.ts';

export type Skipped = { skipped: string };

export interface NlcResult {
  gpu: string;
  oneStreamTokS: number;
  eightStreamsTokS: number;
}

type NlcOptions = {
  model: string;
  adapter?: string;
  gpu: boolean;
  promptTokens: number;
  genTokens: number;
  runs: number;
  threads?: number;
};

/**
 * measureNodeLlamaCpp in a child process: node-llama-cpp's llama.cpp libraries carry the same names
 * as the CUDA build's (libggml-base.so, ...), and one process must not load both.
 */
export function measureNodeLlamaCppApart(o: NlcOptions): NlcResult | Skipped {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'nlc-child.ts'), JSON.stringify(o)], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  const last = r.stdout?.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as NlcResult | Skipped;
  } catch {
    return {
      skipped: `node-llama-cpp's run failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' ')}`,
    };
  }
}

/** node-llama-cpp 3.21.1 as its users drive it: LlamaContextSequence.evaluate, one and eight sequences. */
export async function measureNodeLlamaCpp(o: NlcOptions): Promise<NlcResult | Skipped> {
  let nlc: typeof import('node-llama-cpp');
  try {
    nlc = await import('node-llama-cpp');
  } catch (e) {
    return { skipped: `node-llama-cpp did not load: ${(e as Error).message}` };
  }
  let llama: Awaited<ReturnType<typeof nlc.getLlama>>;
  try {
    llama = await nlc.getLlama({ gpu: o.gpu ? 'cuda' : false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
  } catch (e) {
    return {
      skipped: `node-llama-cpp has no ${o.gpu ? 'CUDA' : 'CPU'} binary here: ${(e as Error).message.split('\n')[0]}`,
    };
  }
  const model = await llama.loadModel({
    modelPath: o.model,
    ...(o.gpu ? { gpuLayers: 'max' as const } : { gpuLayers: 0 }),
  });
  try {
    const ctx = await model.createContext({
      sequences: 8,
      contextSize: 8 * (o.promptTokens + o.genTokens + 16),
      flashAttention: true,
      ...(o.threads ? { threads: o.threads } : {}),
      ...(o.adapter ? { lora: { adapters: [{ filePath: o.adapter, scale: 1 }] } } : {}),
    });
    const prompt = model
      .tokenize('The quick brown fox jumps over the lazy dog. '.repeat(o.promptTokens), false)
      .slice(0, o.promptTokens);
    const stream = async (seq: ReturnType<typeof ctx.getSequence>) => {
      const times: number[] = [];
      for await (const _ of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
        times.push(performance.now());
        if (times.length >= o.genTokens) break;
      }
      await seq.clearHistory();
      return times;
    };
    const seqs = Array.from({ length: 8 }, () => ctx.getSequence());
    const one: number[] = [];
    const eight: number[] = [];
    await stream(seqs[0]!); // warm-up
    for (let i = 0; i < o.runs; i++) {
      const t = await stream(seqs[0]!);
      one.push((t.length - 1) / ((t.at(-1)! - t[0]!) / 1000));
      eight.push(steadyRate(await Promise.all(seqs.map(stream))));
    }
    await ctx.dispose();
    return { gpu: String(llama.gpu), oneStreamTokS: median(one), eightStreamsTokS: median(eight) };
  } finally {
    await model.dispose();
  }
}

function findTool(dir: string, name: string): string | null {
  if (!existsSync(dir)) return null;
  for (const e of readdirSync(dir)) {
    const p = path.join(dir, e);
    if (e === name && statSync(p).isFile()) return p;
    if (statSync(p).isDirectory() && !e.startsWith('CMakeFiles')) {
      const hit = findTool(p, name);
      if (hit) return hit;
    }
  }
  return null;
}

const TOOLS = ['llama-bench', 'llama-batched-bench', 'llama-completion'] as const;

/** llama.cpp's llama-bench, llama-batched-bench and llama-completion from the CUDA build tree (npm run build:cuda), built on demand. */
export function llamaTools(
  buildDir: string,
  progress: (m: string) => void,
): { bench: string; batched: string; completion: string } | Skipped {
  const find = () => TOOLS.map((t) => findTool(buildDir, t));
  let [bench, batched, completion] = find();
  if (bench && batched && completion) return { bench, batched, completion };
  if (!existsSync(path.join(buildDir, 'CMakeCache.txt')))
    return { skipped: `no build tree at ${buildDir}: run npm run build:cuda first` };
  progress(`building ${TOOLS.join(', ')} (same tree as the CUDA addon)`);
  const r = spawnSync('cmake', ['--build', buildDir, '--target', ...TOOLS, '-j'], { stdio: 'ignore' });
  if (r.status !== 0) return { skipped: `building the llama.cpp tools failed (cmake exit ${r.status})` };
  [bench, batched, completion] = find();
  return bench && batched && completion
    ? { bench, batched, completion }
    : { skipped: 'the llama.cpp tools were not found after building' };
}

/**
 * llama.cpp's own generation loop (llama-completion: greedy, one stream), with or without a LoRA
 * applied unmerged: what an adapter costs llama.cpp itself. (llama-batched-bench takes --lora but
 * never applies it to the context it makes.)
 */
export function llamaCompletion(
  bin: string,
  o: { model: string; lora?: string; promptTokens: number; genTokens: number; gpu: boolean; threads?: number },
): { tgTokS: number } {
  const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(Math.ceil(o.promptTokens / 11));
  const args = [
    '-m',
    o.model,
    '-p',
    prompt,
    '-n',
    String(o.genTokens),
    '--temp',
    '0',
    '--ignore-eos',
    '-no-cnv',
    '-fa',
    'on',
    '-c',
    String(2 * o.promptTokens + o.genTokens + 64),
    '-ngl',
    o.gpu ? '99' : '0',
  ];
  if (o.threads) args.push('-t', String(o.threads));
  if (o.lora) args.push('--lora', o.lora);
  const r = spawnSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
  // "<prefix>_print:        eval time = ... ms / N runs (... ms per token, R tokens per second)"
  const m = /print:\s+eval time = .*?([\d.]+) tokens per second/.exec(r.stderr ?? '');
  if (!m)
    throw new Error(
      `llama-completion gave no timing (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' ')}`,
    );
  return { tgTokS: Number(m[1]) };
}

export function llamaBench(
  bin: string,
  o: { model: string; promptTokens: number; genTokens: number; gpu: boolean; threads?: number },
): { tgTokS: number; ppTokS: number } {
  const args = [
    '-m',
    o.model,
    '-p',
    String(o.promptTokens),
    '-n',
    String(o.genTokens),
    '-fa',
    '1',
    '-r',
    '3',
    '-o',
    'json',
    '-ngl',
    o.gpu ? '99' : '0',
  ];
  if (o.threads) args.push('-t', String(o.threads));
  const rows = JSON.parse(execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as {
    n_prompt: number;
    n_gen: number;
    avg_ts: number;
  }[];
  return {
    ppTokS: rows.find((r) => r.n_prompt > 0)?.avg_ts ?? Number.NaN,
    tgTokS: rows.find((r) => r.n_gen > 0)?.avg_ts ?? Number.NaN,
  };
}

export function batchedBench(
  bin: string,
  o: { model: string; promptTokens: number; genTokens: number; streams: number[]; gpu: boolean; threads?: number },
): { streams: number; tgTokS: number }[] {
  const ctx = Math.max(...o.streams) * (o.promptTokens + o.genTokens) + 64;
  const args = [
    '-m',
    o.model,
    '-c',
    String(ctx),
    '-b',
    '2048',
    '-ub',
    '512',
    '-npp',
    String(o.promptTokens),
    '-ntg',
    String(o.genTokens),
    '-npl',
    o.streams.join(','),
    '-ngl',
    o.gpu ? '99' : '0',
    '-fa',
    'on',
    '--output-format',
    'jsonl',
  ];
  if (o.threads) args.push('-t', String(o.threads));
  const out = execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { pl: number; speed_tg: number })
    .map((r) => ({ streams: r.pl, tgTokS: r.speed_tg }));
}

/** Tokens/s if every weight byte is read once per token (token_embd reads one row: excluded). */
export function bandwidthBound(modelBytes: number, embdBytes: number, gbPerSecond: number): number {
  return (gbPerSecond * 1e9) / (modelBytes - embdBytes);
}
