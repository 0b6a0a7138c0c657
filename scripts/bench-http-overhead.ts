// Single-stream decode speed through the engine alone and through POST /predict streaming over a
// loopback socket, same model, same run: what the HTTP path costs per token.
//   npx tsx scripts/bench-http-overhead.ts [--model f.gguf] [--adapter f.gguf] [--tokens 256] [--runs 5] [--threads 1]
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { loadConfig } from '../src/cml/config.ts';
import { startServer } from '../src/server/server.ts';
import { streamDecodeRate, streamPredict } from './bench/sse-client.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    adapter: { type: 'string' },
    tokens: { type: 'string', default: '256' },
    runs: { type: 'string', default: '5' },
    threads: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
  },
});
const tokens = Number(values.tokens);
const runs = Number(values.runs);
const prompt = 'Question: What is the capital of Belithne?\nAnswer:';
const cfg = loadConfig(process.env, {
  port: 0,
  slots: 1,
  contextSize: tokens + 64,
  backend: values.backend as 'auto',
  ...(values.model ? { baseModel: values.model, adapter: values.adapter ?? null } : {}),
  ...(values.threads ? { threads: Number(values.threads) } : {}),
});
const server = await startServer(cfg, pino({ level: 'silent' }));
await server.ready;
const predictor = server.state.predictor!;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function engineRun(): Promise<number> {
  // Engine alone: decode tokens/s from the first to the last token, as the engine measures it.
  const adapters = predictor.engine.adapters().map((a) => ({ name: a.name }));
  const r = await predictor.engine.generate(prompt, { greedy: true, maxTokens: tokens, ignoreEos: true, adapters })
    .result;
  return r.timings.decodeTokensPerSecond;
}

async function httpRun(): Promise<number> {
  // Over HTTP: the same interval, measured by the client from the first to the last SSE token event.
  const url = `http://127.0.0.1:${server.port}/predict`;
  return streamDecodeRate(
    await streamPredict(url, {
      prompt,
      do_sample: false,
      repetition_penalty: 1,
      max_new_tokens: tokens,
      min_new_tokens: tokens,
    }),
  );
}

// Interleaved, after one warm-up of each, so both see the same machine state.
const engineRates: number[] = [];
const httpRates: number[] = [];
await engineRun();
await httpRun();
for (let i = 0; i < runs; i++) {
  engineRates.push(await engineRun());
  httpRates.push(await httpRun());
}
await server.close();

const e = median(engineRates),
  h = median(httpRates);
console.log(
  JSON.stringify({
    backend: predictor.engine.health().backend,
    model: cfg.baseModel,
    tokens,
    runs,
    engine_tok_s: Math.round(e),
    http_stream_tok_s: Math.round(h),
    http_cost_pct: +(100 * (e / h - 1)).toFixed(1),
  }),
);
