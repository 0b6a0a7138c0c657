// Our server measured two ways in one process: through the engine, and through POST /predict
// streaming over a loopback socket (to see what HTTP costs).
import { rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Predictor } from '../../src/cml/predict.ts';
import {
  cpuBudget,
  Engine,
  mergeAdapter,
  schedulerPhases,
  type BackendChoice,
  type EngineOptions,
  type GenerateParams,
  type SchedulerProfile,
} from '../../src/engine/index.ts';
import { createApp } from '../../src/server/app.ts';
import { newAppContext } from '../../src/server/context.ts';
import { Metrics } from '../../src/server/metrics.ts';
import { streamDecodeRate, streamPredict } from './sse-client.ts';
import { gaps, median, percentile, steadyRate } from './stats.ts';

export interface OursOptions {
  model: string;
  adapters: string[]; // named 'a', 'b', 'c', ... in order
  backend: BackendChoice;
  threads?: number;
  promptTokens: number;
  genTokens: number;
  streams: number[];
  runs: number;
  http: boolean;
  /** Also measure adapter 'a' merged into the weights. */
  merged: boolean;
  /**
   * Adapters mixed over one batch (1: one unmerged adapter on every stream), each at 8 and 64
   * streams (those within the sweep; else its largest), against base at the same streams.
   */
  mixAdapters: number[];
  /** The adapter bank's layout (EngineOptions.adapterBankLayout). */
  bankLayout?: 'auto' | 'stacked' | 'gathered';
  progress: (what: string) => void;
  /** Each figure as soon as it is measured: a run cut short by a time limit still leaves them in its log. */
  note?: (figure: string) => void;
}

/** Mean µs per scheduler step: decode (with the wait for the device), sample, and the rest. */
export interface StepProfile {
  decodeUs: number;
  sampleUs: number;
  restUs: number;
}

export interface SingleStream {
  prefillTokS: number;
  ttftMs: number;
  decodeTokS: number;
  itlP50Ms: number;
  itlP99Ms: number;
  step?: StepProfile;
  /** Over HTTP: the engine's own decode rate for the same requests (from the final event). */
  serverDecodeTokS?: number;
}

export interface SweepPoint {
  streams: number;
  aggregateTokS: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  step?: StepProfile;
}

/** Per step between two profiles; rest is emit and the loop's other work (schedulerPhases). */
function stepProfile(a: SchedulerProfile | undefined, b: SchedulerProfile | undefined): StepProfile | undefined {
  if (!a || !b || b.steps <= a.steps) return undefined;
  const t = schedulerPhases(b, a);
  return { decodeUs: t.decodeUs / t.steps, sampleUs: t.sampleUs / t.steps, restUs: (t.emitUs + t.otherUs) / t.steps };
}

export interface OursResult {
  backend: string;
  reason: string;
  devices: string[];
  loadMs: number;
  /** Peak over the phases; null without a GPU. */
  gpuMemoryMb: number | null;
  engine: SingleStream;
  http: SingleStream | null;
  sweep: SweepPoint[];
  lora: {
    oneStream: SingleStream | null;
    eight: { base: number; lora: number; mixed: number | null } | null;
    /** k adapters spread over n streams (stream i runs adapter i mod k), and base at n streams. */
    mixes: {
      streams: number;
      adapters: number;
      tokS: number;
      baseTokS: number;
      switches: number;
      steps: number;
      /** The same mix with the adapter bank off (adapterBank: 0: sets take turns), in this run, and base there. */
      turnsTokS: number | null;
      turnsBaseTokS: number | null;
    }[];
    /** Adapter 'a' merged into the weights (how `serve` runs it): its requests, and base requests on that model. */
    merged: { mergeMs: number; oneStream: SingleStream; baseOnMerged: SingleStream } | null;
  };
  /** Fine Tuning Studio's default sampling (temperature, top-k 50, repetition penalty) instead of greedy. */
  studio: { oneStreamTokS: number; streams: number; aggregateTokS: number };
}

/** DEFAULT_GENERATIONAL_CONFIG of the studio, as engine parameters: what a CML endpoint runs by default. */
const STUDIO_SAMPLING: GenerateParams = { temperature: 0.8, topK: 50, topP: 1, repetitionPenalty: 1.1, seed: 7 };

function gpuUsedMb(engine: {
  backend: { addon: { devices(): { type: string; memoryFree: number; memoryTotal: number }[] } };
}): number {
  return (
    engine.backend.addon
      .devices()
      .filter((d) => d.type === 'gpu')
      .reduce((s, d) => s + (d.memoryTotal - d.memoryFree), 0) /
    2 ** 20
  );
}

export async function measureOurs(o: OursOptions): Promise<OursResult> {
  const maxStreams = Math.max(...o.streams, 8);
  const load = (extra: Partial<EngineOptions> = {}) =>
    Engine.load({
      modelPath: o.model,
      backend: o.backend,
      slots: maxStreams,
      maxQueue: maxStreams,
      contextSize: o.promptTokens + o.genTokens + 16,
      flashAttention: 'auto',
      promptCache: false, // every run prefills its whole prompt, as llama-bench's pp does
      ...(o.bankLayout ? { adapterBankLayout: o.bankLayout } : {}),
      ...(o.threads ? { threads: o.threads } : {}),
      ...extra,
    });
  const t0 = performance.now();
  let engine = await load();
  const loadMs = performance.now() - t0;
  try {
    const names = o.adapters.map((_, i) => String.fromCharCode(97 + i));
    for (const [i, p] of o.adapters.entries()) await engine.loadAdapter(names[i]!, p);
    // In use on the GPU (every process on the card), sampled after each phase, outside the timed
    // runs: ggml's CUDA memory pool grows with the largest batch it has computed.
    let gpuMemoryMb: number | null = null;
    const sampleGpu = () => {
      if (engine.backend.hasGpu) gpuMemoryMb = Math.max(gpuMemoryMb ?? 0, gpuUsedMb(engine));
    };
    sampleGpu();

    // A prompt of exactly promptTokens ids (BOS first), from ordinary text.
    const text = 'The quick brown fox jumps over the lazy dog while the patient engineer measures every token. ';
    const ids = engine.tokenize(text.repeat(Math.ceil(o.promptTokens / 4)));
    const prompt = ids.slice(0, o.promptTokens);
    let sampling: GenerateParams = { greedy: true };
    const params = (adapters: GenerateParams['adapters'] = []): GenerateParams => ({
      ...sampling,
      maxTokens: o.genTokens,
      ignoreEos: true,
      adapters,
    });

    const timed = async (adapters: GenerateParams['adapters']) => {
      const start = performance.now();
      const g = engine.generate(prompt, params(adapters));
      const times: number[] = [];
      for await (const c of g) if (c.token !== null) times.push(performance.now());
      const r = await g.result;
      return { start, times, r };
    };

    const single = async (adapters: GenerateParams['adapters']): Promise<SingleStream> => {
      await timed(adapters); // warm-up
      const p0 = engine.stats().profile;
      const runs = [];
      for (let i = 0; i < o.runs; i++) runs.push(await timed(adapters));
      const step = stepProfile(p0, engine.stats().profile);
      sampleGpu();
      const itl = runs.flatMap((x) => gaps(x.times));
      return {
        ...(step ? { step } : {}),
        prefillTokS: median(runs.map((x) => (o.promptTokens / x.r.timings.prefillMs) * 1000)),
        ttftMs: median(runs.map((x) => x.r.timings.ttftMs)),
        decodeTokS: median(runs.map((x) => x.r.timings.decodeTokensPerSecond)),
        itlP50Ms: percentile(itl, 50),
        itlP99Ms: percentile(itl, 99),
      };
    };

    const concurrent = async (n: number, adapterOf: (i: number) => GenerateParams['adapters']) => {
      const runs = await Promise.all(Array.from({ length: n }, (_, i) => timed(adapterOf(i))));
      return { rate: steadyRate(runs.map((x) => x.times)), ttft: runs.map((x) => x.r.timings.ttftMs) };
    };
    type Workload = (i: number) => GenerateParams['adapters'];
    // Workloads over n streams in rounds (one run of each in turn, after a warm-up each, where the
    // bank takes its members), so that this noisy machine's drift falls on all of them alike: per
    // workload the median of its rounds, and the adapter-set switches and steps its runs took.
    const inRounds = async (n: number, workloads: Workload[]) => {
      for (const f of workloads) await concurrent(n, f);
      const rates = workloads.map(() => [] as number[]);
      const counts = workloads.map(() => ({ switches: 0, steps: 0 }));
      for (let round = 0; round < Math.max(2, o.runs); round++) {
        for (const [k, f] of workloads.entries()) {
          const p0 = engine.stats().profile!;
          rates[k]!.push((await concurrent(n, f)).rate);
          const p1 = engine.stats().profile!;
          counts[k]!.switches += p1.adapterSwitches - p0.adapterSwitches;
          counts[k]!.steps += p1.steps - p0.steps;
        }
      }
      return workloads.map((_, k) => ({ tokS: median(rates[k]!), ...counts[k]! }));
    };
    // Stream i runs adapter i mod k (none for k = 0).
    const mixOf =
      (k: number): Workload =>
      (i) =>
        k === 0 ? [] : [{ name: names[i % k]!, scale: 1 }];

    const note = o.note ?? (() => {});
    const r0 = (x: number) => Math.round(x);
    const one = (s: SingleStream) =>
      `${r0(s.decodeTokS)} tok/s, TTFT ${s.ttftMs.toFixed(1)} ms, ITL p50/p99 ${s.itlP50Ms.toFixed(2)}/${s.itlP99Ms.toFixed(2)} ms` +
      (s.step ? `, µs/step decode ${r0(s.step.decodeUs)} sample ${r0(s.step.sampleUs)} rest ${r0(s.step.restUs)}` : '');
    o.progress('ours: one stream through the engine');
    const engineSingle = await single([]);
    note(`one stream: ${one(engineSingle)}`);

    const sweep: SweepPoint[] = [];
    for (const n of o.streams) {
      o.progress(`ours: ${n} concurrent streams`);
      await concurrent(n, () => []); // warm-up
      const best = [];
      const p0 = engine.stats().profile;
      for (let i = 0; i < o.runs; i++) best.push(await concurrent(n, () => []));
      const step = stepProfile(p0, engine.stats().profile);
      sampleGpu();
      const ttft = best.flatMap((b) => b.ttft);
      sweep.push({
        streams: n,
        aggregateTokS: median(best.map((b) => b.rate)),
        ttftP50Ms: percentile(ttft, 50),
        ttftP99Ms: percentile(ttft, 99),
        ...(step ? { step } : {}),
      });
      note(
        `${n} streams: ${r0(sweep.at(-1)!.aggregateTokS)} tok/s aggregate, TTFT p50/p99 ${r0(percentile(ttft, 50))}/${r0(percentile(ttft, 99))} ms`,
      );
    }

    let lora: OursResult['lora'] = { oneStream: null, eight: null, merged: null, mixes: [] };
    if (names.length > 0) {
      o.progress('ours: LoRA on one stream and on eight');
      const loraOne = await single([{ name: 'a', scale: 1 }]);
      note(`LoRA, one stream: ${one(loraOne)}`);
      // Base, one adapter and two mixed over 8 streams in rounds, as the mixes below: measured one
      // after another, this machine's drift once put the mix at 1.26 of base.
      const [base, one8, two8] = await inRounds(8, [mixOf(0), mixOf(1), ...(names.length > 1 ? [mixOf(2)] : [])]);
      const [base8, lora8, mixed8] = [base!.tokS, one8!.tokS, two8?.tokS ?? null];
      lora = { oneStream: loraOne, eight: { base: base8, lora: lora8, mixed: mixed8 }, merged: null, mixes: [] };
      note(
        `8 streams: base ${r0(base8)}, LoRA ${r0(lora8)}, two adapters mixed ${mixed8 === null ? '-' : r0(mixed8)} tok/s`,
      );
      if (mixed8 !== null) {
        note(
          `two adapters mixed: ${two8!.switches} switches in ${two8!.steps} steps, the last one's cost ${r0(engine.stats().profile!.switchCostUs)} µs`,
        );
      }
    }

    // Mixed adapters at 8 and 64 streams (what turn-taking costs, and what a mixed batch must beat).
    const maxStreams = Math.max(...o.streams);
    const mixStreams = [8, 64].filter((n) => n <= maxStreams);
    if (mixStreams.length === 0) mixStreams.push(maxStreams);
    for (const n of mixStreams) {
      const ks = o.mixAdapters.filter((k) => k <= names.length);
      if (ks.length === 0) continue;
      o.progress(`ours: ${ks.join(', ')} adapters mixed over ${n} streams`);
      const [base, ...mixed] = await inRounds(n, [0, ...ks].map(mixOf));
      const baseTokS = base!.tokS;
      for (const [j, k] of ks.entries()) {
        const { tokS, switches, steps } = mixed[j]!;
        const row = {
          streams: n,
          adapters: k,
          tokS,
          baseTokS,
          switches,
          steps,
          turnsTokS: null as number | null,
          turnsBaseTokS: null as number | null,
        };
        lora.mixes.push(row);
        note(
          `${k} adapter${k > 1 ? 's' : ''} mixed over ${n} streams: ${r0(tokS)} tok/s, ${(tokS / baseTokS).toFixed(2)} of base (${r0(baseTokS)}); ${row.switches} switches in ${row.steps} steps`,
        );
      }
    }

    // The mixes again with the bank off, on an engine of their own: what turn-taking gives on this
    // machine in this run (the bank's gain, free of run-to-run noise).
    const mixedRows = lora.mixes;
    if (mixedRows.length > 0) {
      o.progress('ours: the same mixes with the adapter bank off (turns)');
      const banked = engine;
      engine = await load({ adapterBank: 0 });
      try {
        for (const [i, p] of o.adapters.entries()) await engine.loadAdapter(names[i]!, p);
        // In rounds with base on this engine, as above.
        const streamCounts = [...new Set(mixedRows.map((m) => m.streams))];
        for (const n of streamCounts) {
          const rows = mixedRows.filter((m) => m.streams === n);
          const [base, ...turns] = await inRounds(n, [0, ...rows.map((m) => m.adapters)].map(mixOf));
          for (const [j, m] of rows.entries()) {
            m.turnsTokS = turns[j]!.tokS;
            m.turnsBaseTokS = base!.tokS;
            note(
              `${m.adapters} adapter${m.adapters > 1 ? 's' : ''} mixed over ${n} streams, turns: ${r0(m.turnsTokS)} tok/s, ${(m.turnsTokS / m.turnsBaseTokS).toFixed(2)} of base (${r0(m.turnsBaseTokS)})`,
            );
          }
        }
      } finally {
        await engine.close();
        engine = banked;
      }
    }

    o.progress("ours: the studio's default sampling, one stream and the most streams");
    sampling = STUDIO_SAMPLING;
    const most = Math.max(...o.streams);
    const studioOne = await single([]);
    await concurrent(most, () => []);
    const studio = {
      oneStreamTokS: studioOne.decodeTokS,
      streams: most,
      aggregateTokS: (await concurrent(most, () => [])).rate,
    };
    note(`studio sampling: one stream ${r0(studio.oneStreamTokS)}, ${most} streams ${r0(studio.aggregateTokS)} tok/s`);
    sampling = { greedy: true };

    let http: SingleStream | null = null;
    if (o.http) {
      o.progress('ours: one stream through POST /predict (SSE)');
      try {
        http = await measureHttp(engine, prompt.length, o);
        note(`POST /predict: ${one(http)} (the engine saw ${r0(http.serverDecodeTokS ?? Number.NaN)} tok/s)`);
      } catch (e) {
        note(`POST /predict: not measured: ${(e as Error).message}`);
      }
    }
    if (names.length > 0 && o.merged) {
      o.progress('ours: adapter a merged into the weights (one stream: adapter, then base)');
      const out = path.join(os.tmpdir(), `cml-bench-merged-${process.pid}.gguf`);
      const m0 = performance.now();
      await mergeAdapter({
        modelPath: o.model,
        adapterPath: o.adapters[0]!,
        out,
        backend: o.backend,
        threads: cpuBudget().cpus,
      });
      const mergeMs = performance.now() - m0;
      await engine.close();
      try {
        engine = await load({ modelPath: out, mergedAdapter: { name: 'a', path: o.adapters[0]!, scale: 1 } });
        lora.merged = { mergeMs, oneStream: await single([{ name: 'a', scale: 1 }]), baseOnMerged: await single([]) };
        note(
          `merged in ${r0(mergeMs)} ms; adapter ${r0(lora.merged.oneStream.decodeTokS)}, base on it ${r0(lora.merged.baseOnMerged.decodeTokS)} tok/s`,
        );
      } finally {
        rmSync(out, { force: true });
      }
    }

    return {
      backend: engine.backend.name,
      reason: engine.backend.reason,
      devices: engine.backend.devices.map((d) => `${d.name}: ${d.description}`),
      loadMs,
      gpuMemoryMb,
      engine: engineSingle,
      http,
      sweep,
      lora,
      studio,
    };
  } finally {
    await engine.close();
  }
}

/** The same single-stream run over HTTP, timed by the client from the SSE token events. */
async function measureHttp(engine: Engine, promptLen: number, o: OursOptions): Promise<SingleStream> {
  const state = {
    status: 'ready' as const,
    predictor: new Predictor(engine, {}, null),
    modelName: 'bench',
    adapterName: null,
  };
  const app = createApp(newAppContext(state, new Metrics(() => engine.stats()), null, pino({ level: 'silent' })));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/predict`;
  // The text prompt that tokenizes to about promptLen tokens: the server takes text, as clients do.
  const text = engine.detokenize(
    engine.tokenize('The quick brown fox jumps over the lazy dog. '.repeat(promptLen), false).slice(0, promptLen - 1),
  );
  const run = () =>
    streamPredict(url, {
      prompt: text,
      do_sample: false,
      repetition_penalty: 1,
      max_new_tokens: o.genTokens,
      min_new_tokens: o.genTokens,
    });
  try {
    await run();
    const runs = [];
    for (let i = 0; i < o.runs; i++) runs.push(await run());
    const itl = runs.flatMap((x) => gaps(x.times));
    return {
      prefillTokS: median(runs.map((x) => (x.done.usage.prompt_tokens / x.done.timings.prefillMs) * 1000)),
      ttftMs: median(runs.map((x) => x.times[0]! - x.start)),
      decodeTokS: median(runs.map(streamDecodeRate)),
      itlP50Ms: percentile(itl, 50),
      itlP99Ms: percentile(itl, 99),
      serverDecodeTokS: median(runs.map((x) => x.done.timings.decodeTokensPerSecond)),
    };
  } finally {
    server.close();
    server.closeAllConnections();
  }
}
