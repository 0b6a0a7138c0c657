// npm run bench -- [--shape 1b|8b|60m] [--type f16|q8_0|q4_0] [--model f.gguf --adapter f.gguf]
//   [--backend auto|cuda|cpu] [--streams 1,4,8,16,32,64] [--prompt-tokens 128] [--tokens 128]
//   [--lora-rank 16] [--lora-targets attn_q,attn_v,...] [--mix-adapters 1,2,8] [--bank-layout auto|stacked|gathered]
//   [--runs 3] [--bandwidth GB/s]
//   [--baselines nlc,llama-bench,batched-bench] [--no-http] [--no-merged] [--threads N] [--out dir] [--models-dir dir] [--quick]
// One run, one machine: ours (engine and POST /predict) beside node-llama-cpp and llama.cpp's own
// benchmarks on the same model; writes results.json, report.md and SVG charts; prints a table last.
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cpuBudget, ENGINE_DEFAULTS } from '../../src/engine/index.ts';
import { readGgufHeader } from '../../src/intake/gguf-header.ts';
import {
  bandwidthBound,
  batchedBench,
  llamaBench,
  llamaCompletion,
  llamaTools,
  measureNodeLlamaCppApart,
} from './baselines.ts';
import { measureOurs, type SingleStream, type StepProfile } from './ours.ts';
import { barChart, lineChart, table } from './report.ts';
import { withPeakRss } from './stats.ts';
import { PROJECTIONS, SHAPES, writeSyntheticLora, writeSyntheticModel, type Projection } from './synth.ts';

const { values: a } = parseArgs({
  options: {
    shape: { type: 'string', default: '1b' },
    type: { type: 'string', default: 'f16' },
    model: { type: 'string' },
    adapter: { type: 'string', multiple: true },
    backend: { type: 'string', default: 'auto' },
    streams: { type: 'string', default: '1,4,8,16,32,64' },
    'prompt-tokens': { type: 'string', default: '128' },
    tokens: { type: 'string', default: '128' },
    'lora-rank': { type: 'string', default: '16' },
    'mix-adapters': { type: 'string', default: '1,2,8' },
    'lora-targets': { type: 'string', default: PROJECTIONS.join(',') },
    'bank-layout': { type: 'string', default: 'auto' },
    runs: { type: 'string', default: '3' },
    bandwidth: { type: 'string' },
    baselines: { type: 'string', default: 'nlc,llama-bench,batched-bench' },
    'no-http': { type: 'boolean', default: false },
    'no-merged': { type: 'boolean', default: false },
    threads: { type: 'string' },
    out: { type: 'string' },
    'models-dir': { type: 'string' },
    quick: { type: 'boolean', default: false },
  },
});

const fail = (m: string): never => {
  console.error(`bench: ${m}`);
  process.exit(2);
};
const int = (name: string, v: string) =>
  Number.isInteger(Number(v)) && Number(v) > 0 ? Number(v) : fail(`--${name} must be a positive integer`);

if (a.quick) {
  // CPU-sized smoke run (CI): a tiny synthetic model, few tokens, the cheap baselines only.
  // Options given on the command line still win.
  const quick = {
    shape: 'tiny',
    type: 'q8_0',
    streams: '1,2,4',
    'prompt-tokens': '16',
    tokens: '16',
    runs: '1',
    'lora-rank': '4',
    'mix-adapters': '1,2',
    baselines: 'nlc',
    backend: 'cpu',
    threads: '1',
  };
  for (const [k, v] of Object.entries(quick))
    if (!process.argv.some((x) => x === `--${k}` || x.startsWith(`--${k}=`))) Object.assign(a, { [k]: v });
}
SHAPES.tiny = { hidden: 128, layers: 2, ffn: 256, heads: 4, kvHeads: 2 };
const shape = SHAPES[a.shape!] ?? fail(`--shape must be one of ${Object.keys(SHAPES).join(', ')}`);
if (!['f16', 'q8_0', 'q4_0'].includes(a.type!)) fail('--type must be f16, q8_0 or q4_0');
if (!['auto', 'cpu', 'cuda'].includes(a.backend!)) fail('--backend must be auto, cpu or cuda');
const targets = a['lora-targets']!.split(',') as Projection[];
if (!targets.every((t) => (PROJECTIONS as readonly string[]).includes(t)))
  fail(`--lora-targets take ${PROJECTIONS.join(',')}`);
const streams = a.streams!.split(',').map((s) => int('streams', s));
const mixAdapters = a['mix-adapters']!.split(',').map((s) => int('mix-adapters', s));
const bankLayout = a['bank-layout'] as 'auto' | 'stacked' | 'gathered';
if (!['auto', 'stacked', 'gathered'].includes(bankLayout)) fail('--bank-layout must be auto, stacked or gathered');
const promptTokens = int('prompt-tokens', a['prompt-tokens']!);
const genTokens = int('tokens', a.tokens!);
const runs = int('runs', a.runs!);
const threads = a.threads ? int('threads', a.threads) : undefined;
const baselines = new Set(a.baselines!.split(',').filter(Boolean));
const out = path.resolve(a.out ?? path.join('bench-results', new Date().toISOString().replace(/[:.]/g, '-')));
mkdirSync(out, { recursive: true });

let step = 0;
const progress = (m: string) => console.error(`[bench ${++step}] ${m}`);
const note = (m: string) => console.error(`    ${m}`);

// Models: given, or synthetic ones written beside the results (or into --models-dir).
const synthDir = path.resolve(a['models-dir'] ?? path.join(out, 'models'));
mkdirSync(synthDir, { recursive: true });
let model = a.model;
let adapters = a.adapter ?? [];
if (!model) {
  model = path.join(synthDir, `synthetic-${a.shape}-${a.type}.gguf`);
  progress(`writing the synthetic ${a.shape} ${a.type} model`);
  await writeSyntheticModel({ shape, type: a.type as 'f16', out: model });
  adapters = [];
  const count = Math.max(2, ...mixAdapters);
  for (const [i, name] of Array.from({ length: count }, (_, j) => String.fromCharCode(97 + j)).entries()) {
    const f = path.join(synthDir, `lora-${name}-r${a['lora-rank']}.gguf`);
    await writeSyntheticLora({ shape, rank: int('lora-rank', a['lora-rank']!), targets, out: f, seed: 100 + 1000 * i });
    adapters.push(f);
  }
}

const { value: ours, peakRssMb } = await withPeakRss(() =>
  measureOurs({
    model: model!,
    adapters,
    backend: a.backend as 'auto',
    ...(threads ? { threads } : {}),
    promptTokens,
    genTokens,
    streams,
    runs,
    http: !a['no-http'],
    merged: !a['no-merged'],
    mixAdapters,
    bankLayout,
    progress,
    note,
  }),
);
const gpu = ours.backend === 'cuda';

const cpus = cpuBudget();
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: ours.devices,
  // The CPUs the run could use: a cgroup quota below the cores slows every CPU figure.
  cpus,
  model: { file: model, bytes: statSync(model).size, shape: a.model ? null : a.shape, type: a.model ? null : a.type },
  adapters,
  settings: { promptTokens, genTokens, streams, runs, threads: threads ?? null, flashAttention: 'auto' },
  ours: { ...ours, peakRssMb },
};

if (baselines.has('nlc')) {
  progress('node-llama-cpp: one and eight sequences');
  results.nodeLlamaCpp = measureNodeLlamaCppApart({
    model,
    gpu,
    promptTokens,
    genTokens,
    runs,
    ...(threads ? { threads } : {}),
  });
  note(`node-llama-cpp: ${JSON.stringify(results.nodeLlamaCpp)}`);
}
if (baselines.has('llama-bench') || baselines.has('batched-bench')) {
  const tools = llamaTools(path.resolve('build-cuda'), progress);
  const o = { model, promptTokens, genTokens, gpu, ...(threads ? { threads } : {}) };
  if ('skipped' in tools) {
    results.llamaBench = tools;
    results.batchedBench = tools;
  } else {
    if (baselines.has('llama-bench')) {
      progress('llama-bench');
      try {
        results.llamaBench = llamaBench(tools.bench, o);
      } catch (e) {
        results.llamaBench = { skipped: (e as Error).message.split('\n')[0] };
      }
      note(`llama-bench: ${JSON.stringify(results.llamaBench)}`);
    }
    if (baselines.has('batched-bench')) {
      progress('llama-batched-bench');
      try {
        results.batchedBench = batchedBench(tools.batched, { ...o, streams });
      } catch (e) {
        results.batchedBench = { skipped: (e as Error).message.split('\n')[0] };
      }
      note(`llama-batched-bench: ${JSON.stringify(results.batchedBench)}`);
    }
    if (adapters.length > 0) {
      // llama.cpp's own cost of an unmerged LoRA, to hold ours against.
      progress('llama-completion, one stream, without and with adapter a');
      try {
        results.llamaCompletion = {
          base: llamaCompletion(tools.completion, o).tgTokS,
          lora: llamaCompletion(tools.completion, { ...o, lora: adapters[0]! }).tgTokS,
        };
      } catch (e) {
        results.llamaCompletion = { skipped: (e as Error).message.split('\n')[0] };
      }
      note(`llama-completion: ${JSON.stringify(results.llamaCompletion)}`);
    }
  }
}
if (a.bandwidth) {
  const h = await readGgufHeader(model);
  const embd = h.tensors.find((t) => t.name === 'token_embd.weight');
  const size = statSync(model).size;
  const embdBytes = embd
    ? (size * embd.ne.reduce((x, y) => x * y, 1)) / h.tensors.reduce((s, t) => s + t.ne.reduce((x, y) => x * y, 1), 0)
    : 0;
  results.bandwidthBoundTokS = bandwidthBound(size, embdBytes, Number(a.bandwidth));
}

// Ratios: ours over each baseline, where both exist.
const nlc = results.nodeLlamaCpp as { oneStreamTokS?: number; eightStreamsTokS?: number } | undefined;
const lb = results.llamaBench as { tgTokS?: number } | undefined;
const bb = Array.isArray(results.batchedBench) ? (results.batchedBench as { streams: number; tgTokS: number }[]) : [];
const at = (n: number) => ours.sweep.find((s) => s.streams === n)?.aggregateTokS;
const ratios: Record<string, number> = {};
const ratio = (k: string, x?: number, y?: number) => {
  if (x && y) ratios[k] = x / y;
};
ratio('one stream: ours engine / llama-bench tg', ours.engine.decodeTokS, lb?.tgTokS);
ratio('one stream: ours HTTP / llama-bench tg', ours.http?.decodeTokS, lb?.tgTokS);
ratio('one stream: ours engine / node-llama-cpp', ours.engine.decodeTokS, nlc?.oneStreamTokS);
ratio('8 streams: ours / node-llama-cpp', at(8), nlc?.eightStreamsTokS);
for (const b of bb) ratio(`${b.streams} streams: ours / llama-batched-bench`, at(b.streams), b.tgTokS);
ratio('HTTP over engine (decode time)', ours.engine.decodeTokS, ours.http?.decodeTokS);
// The same requests seen by the engine and by the client: what delivery costs, free of run-to-run noise.
ratio('HTTP over engine, same requests (decode time)', ours.http?.serverDecodeTokS, ours.http?.decodeTokS);
if (ours.lora.oneStream)
  ratio('LoRA on, one stream (lora / base)', ours.lora.oneStream.decodeTokS, ours.engine.decodeTokS);
const lc = results.llamaCompletion as { base?: number; lora?: number } | undefined;
ratio('llama.cpp LoRA on, one stream (llama-completion lora / base)', lc?.lora, lc?.base);
ratio('LoRA on, one stream: ours / llama-completion with the LoRA', ours.lora.oneStream?.decodeTokS, lc?.lora);
ratio('one stream: ours engine / llama-completion', ours.engine.decodeTokS, lc?.base);
if (ours.lora.merged) {
  ratio('LoRA merged, one stream (merged / base)', ours.lora.merged.oneStream.decodeTokS, ours.engine.decodeTokS);
  ratio(
    'base requests on the merged model, one stream (/ base)',
    ours.lora.merged.baseOnMerged.decodeTokS,
    ours.engine.decodeTokS,
  );
}
ratio('studio sampling / greedy, one stream', ours.studio.oneStreamTokS, ours.engine.decodeTokS);
ratio(`studio sampling / greedy, ${ours.studio.streams} streams`, ours.studio.aggregateTokS, at(ours.studio.streams));
if (ours.lora.eight?.mixed)
  ratio('two adapters mixed, 8 streams (mixed / base)', ours.lora.eight.mixed, ours.lora.eight.base);
for (const m of ours.lora.mixes) {
  ratio(`${m.adapters} adapter${m.adapters > 1 ? 's' : ''} mixed, ${m.streams} streams (/ base)`, m.tokS, m.baseTokS);
  if (m.turnsTokS !== null && m.turnsBaseTokS !== null)
    ratio(
      `${m.adapters} adapter${m.adapters > 1 ? 's' : ''} mixed, ${m.streams} streams, bank off: turns (/ base)`,
      m.turnsTokS,
      m.turnsBaseTokS,
    );
}
if (results.bandwidthBoundTokS)
  ratio('one stream: ours / bandwidth bound', ours.engine.decodeTokS, results.bandwidthBoundTokS as number);
results.ratios = ratios;

writeFileSync(path.join(out, 'results.json'), JSON.stringify(results, null, 2));
writeFileSync(
  path.join(out, 'throughput.svg'),
  lineChart('Aggregate decode tokens/s vs concurrent streams', 'streams', 'tokens/s', [
    { name: 'ours (engine)', points: ours.sweep.map((s) => ({ x: s.streams, y: s.aggregateTokS })) },
    ...(bb.length ? [{ name: 'llama-batched-bench', points: bb.map((b) => ({ x: b.streams, y: b.tgTokS })) }] : []),
    ...(nlc?.oneStreamTokS
      ? [
          {
            name: 'node-llama-cpp',
            points: [
              { x: 1, y: nlc.oneStreamTokS },
              { x: 8, y: nlc.eightStreamsTokS! },
            ],
          },
        ]
      : []),
  ]),
);
writeFileSync(
  path.join(out, 'ttft.svg'),
  lineChart('Time to first token vs concurrent streams (ours)', 'streams', 'ms', [
    { name: 'p50', points: ours.sweep.map((s) => ({ x: s.streams, y: s.ttftP50Ms })) },
    { name: 'p99', points: ours.sweep.map((s) => ({ x: s.streams, y: s.ttftP99Ms })) },
  ]),
);
if (ours.lora.eight) {
  writeFileSync(
    path.join(out, 'lora.svg'),
    barChart('LoRA cost (decode tokens/s)', 'tokens/s', [
      { label: '1 stream base', value: ours.engine.decodeTokS },
      { label: '1 stream LoRA', value: ours.lora.oneStream!.decodeTokS },
      ...(ours.lora.merged ? [{ label: '1 stream LoRA merged', value: ours.lora.merged.oneStream.decodeTokS }] : []),
      { label: '8 base', value: ours.lora.eight.base },
      { label: '8 LoRA', value: ours.lora.eight.lora },
      ...(ours.lora.eight.mixed ? [{ label: '8 two adapters', value: ours.lora.eight.mixed }] : []),
    ]),
  );
}

const steps = (p?: StepProfile) =>
  p ? `${p.decodeUs.toFixed(0)} · ${p.sampleUs.toFixed(0)} · ${p.restUs.toFixed(0)}` : '—';
const single: [string, SingleStream][] = [
  ['ours, engine', ours.engine],
  ...(ours.http ? [['ours, POST /predict SSE', ours.http] as [string, SingleStream]] : []),
  ...(ours.lora.oneStream ? [['ours, engine + LoRA', ours.lora.oneStream] as [string, SingleStream]] : []),
  ...(ours.lora.merged
    ? ([
        ['ours, engine + LoRA merged', ours.lora.merged.oneStream],
        ['ours, base requests on the merged model', ours.lora.merged.baseOnMerged],
      ] as [string, SingleStream][])
    : []),
];
const md = [
  `# Benchmark, ${results.date}`,
  '',
  `Machine: ${ours.devices.join('; ')} (backend ${ours.backend}: ${ours.reason}); ${cpus.cores} cores${cpus.quota !== null ? `, a CPU quota of ${cpus.quota}` : ''}, threads ${threads ?? `default (${Math.min(cpus.cpus, ENGINE_DEFAULTS.maxDefaultThreads)})`}. Model: ${path.basename(model)} (${(statSync(model).size / 2 ** 30).toFixed(2)} GiB). Load ${Math.round(ours.loadMs)} ms; peak RSS ${Math.round(peakRssMb)} MiB${ours.gpuMemoryMb !== null ? `; peak GPU memory in use ${Math.round(ours.gpuMemoryMb)} MiB` : ''}. Prompt ${promptTokens} tokens, ${genTokens} generated, medians of ${runs} runs.`,
  '',
  '## One stream',
  table(
    ['path', 'prefill tok/s', 'TTFT ms', 'decode tok/s', 'ITL p50 ms', 'ITL p99 ms', 'µs/step decode · sample · rest'],
    single.map(([n, s]) => [n, s.prefillTokS, s.ttftMs, s.decodeTokS, s.itlP50Ms, s.itlP99Ms, steps(s.step)]),
  ),
  '',
  '## Concurrent streams (aggregate decode tok/s, steady state)',
  table(
    ['streams', 'ours', 'llama-batched-bench', 'TTFT p50 ms', 'TTFT p99 ms', 'µs/step decode · sample · rest'],
    ours.sweep.map((s) => [
      s.streams,
      s.aggregateTokS,
      bb.find((b) => b.streams === s.streams)?.tgTokS ?? '—',
      s.ttftP50Ms,
      s.ttftP99Ms,
      steps(s.step),
    ]),
  ),
  '',
  "Per scheduler step (engine runs, so HTTP is not in it): decode is llama_decode with the wait for the device, sample is every slot's sampling, rest is batching, text and handing events to JS.",
  '',
  `Studio default sampling (temperature 0.8, top-k 50, repetition penalty 1.1) instead of greedy: one stream ${Math.round(ours.studio.oneStreamTokS)} tok/s, ${ours.studio.streams} streams ${Math.round(ours.studio.aggregateTokS)} tok/s.`,
  '',
  ...(ours.lora.mixes.length
    ? [
        '## Adapters mixed in one batch (stream i runs adapter i mod k; unmerged)',
        table(
          [
            'streams',
            'adapters',
            'tok/s',
            'base tok/s',
            'of base',
            'adapter-set switches / steps',
            'turns (bank off): of base',
          ],
          ours.lora.mixes.map((m) => [
            m.streams,
            m.adapters,
            m.tokS,
            m.baseTokS,
            (m.tokS / m.baseTokS).toFixed(2),
            `${m.switches} / ${m.steps}`,
            m.turnsTokS === null || m.turnsBaseTokS === null ? '-' : (m.turnsTokS / m.turnsBaseTokS).toFixed(2),
          ]),
        ),
        '',
      ]
    : []),
  '## Baselines',
  table(
    ['system', 'result'],
    [
      [
        'node-llama-cpp',
        nlc?.oneStreamTokS
          ? `1 stream ${Math.round(nlc.oneStreamTokS)} tok/s, 8 sequences ${Math.round(nlc.eightStreamsTokS!)} tok/s`
          : JSON.stringify(results.nodeLlamaCpp ?? 'not run'),
      ],
      [
        'llama-bench tg',
        lb?.tgTokS ? `${Math.round(lb.tgTokS)} tok/s` : JSON.stringify(results.llamaBench ?? 'not run'),
      ],
      [
        'llama-completion, one stream (base / adapter a unmerged)',
        lc?.base
          ? `${Math.round(lc.base)} / ${Math.round(lc.lora!)} tok/s`
          : JSON.stringify(results.llamaCompletion ?? 'not run'),
      ],
      [
        'bandwidth bound',
        results.bandwidthBoundTokS
          ? `${Math.round(results.bandwidthBoundTokS as number)} tok/s at ${a.bandwidth} GB/s`
          : 'not given (--bandwidth)',
      ],
    ],
  ),
  '',
  '## Ratios',
  table(
    ['ratio', 'value'],
    Object.entries(ratios).map(([k, v]) => [k, v]),
  ),
  '',
  `![throughput](throughput.svg) ![ttft](ttft.svg)${ours.lora.eight ? ' ![lora](lora.svg)' : ''}`,
  '',
].join('\n');
writeFileSync(path.join(out, 'report.md'), md);

console.log(
  table(
    ['measure', 'value'],
    [
      ['one stream, engine (tok/s)', ours.engine.decodeTokS],
      ['one stream, POST /predict (tok/s)', ours.http?.decodeTokS ?? Number.NaN],
      ...ours.sweep.map((s) => [`${s.streams} streams aggregate (tok/s)`, s.aggregateTokS] as [string, number]),
      ...Object.entries(ratios),
    ],
  ),
);
console.log(`\nresults: ${out}`);
