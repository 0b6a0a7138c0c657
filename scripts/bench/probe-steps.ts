// Where a step's time goes at many streams: ours under a few engine settings, on one model in one
// run, beside what llama-batched-bench reached (given). A tool for chasing a gap, not a benchmark.
//   npx tsx scripts/bench/probe-steps.ts --model m.gguf [--backend cuda] [--streams 8,16,64] [--tokens 128]
import { parseArgs } from 'node:util';
import { Engine, schedulerPhases, type EngineOptions } from '../../src/engine/index.ts';
import { table } from './report.ts';
import { steadyRate } from './stats.ts';

const { values: a } = parseArgs({
  options: {
    model: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    streams: { type: 'string', default: '8,16,64' },
    tokens: { type: 'string', default: '128' },
  },
});
if (!a.model) {
  console.error('probe-steps: --model is required');
  process.exit(2);
}
const streams = a.streams!.split(',').map(Number);
const tokens = Number(a.tokens);
const most = Math.max(...streams);

// 'slots n' gives each stream count an engine of exactly that many slots.
const settings: [string, Partial<EngineOptions> | 'slots n'][] = [
  ['defaults', {}],
  ['samplingThreads 1', { samplingThreads: 1 }],
  ['threads 1, samplingThreads 1', { threads: 1, samplingThreads: 1 }],
  ['slots n', 'slots n'],
  ['contextSize 1024', { contextSize: 1024 }],
];

const rows: (string | number)[][] = [];
for (const [name, extra] of settings) {
  for (const group of extra === 'slots n' ? streams.map((n) => [n]) : [streams]) {
    await probe(name, group, extra === 'slots n' ? { slots: group[0]!, maxQueue: group[0]! } : extra);
  }
}

async function probe(name: string, streams: number[], extra: Partial<EngineOptions>) {
  const engine = await Engine.load({
    modelPath: a.model!,
    backend: a.backend as 'auto',
    slots: most,
    maxQueue: most,
    contextSize: 2 * tokens + 16,
    flashAttention: 'auto',
    promptCache: false,
    ...extra,
  });
  try {
    const prompt = engine.tokenize('The quick brown fox jumps over the lazy dog. '.repeat(tokens)).slice(0, tokens);
    const run = async (n: number) => {
      const all = await Promise.all(
        Array.from({ length: n }, async () => {
          const g = engine.generate(prompt, { greedy: true, maxTokens: tokens, ignoreEos: true });
          const times: number[] = [];
          for await (const c of g) if (c.token !== null) times.push(performance.now());
          await g.result;
          return times;
        }),
      );
      return steadyRate(all);
    };
    for (const n of streams) {
      await run(n); // warm-up
      const p0 = engine.stats().profile!;
      const rate = await run(n);
      const p1 = engine.stats().profile!;
      const t = schedulerPhases(p1, p0);
      const per = (us: number) => Math.round(us / t.steps);
      // A steady step, from the rate: what a step costs once every stream is decoding.
      rows.push([
        name,
        n,
        Math.round(rate),
        Math.round((n / rate) * 1e6),
        per(t.decodeUs),
        per(t.sampleUs),
        per(t.emitUs + t.otherUs),
        t.steps,
      ]);
      console.error(`${name}, ${n} streams: ${Math.round(rate)} tok/s`);
    }
  } finally {
    await engine.close();
  }
}
console.log(
  table(
    [
      'settings',
      'streams',
      'tok/s (steady)',
      'µs per steady step',
      'decode µs/step (all)',
      'sample µs/step',
      'other µs/step',
      'steps',
    ],
    rows,
  ),
);
