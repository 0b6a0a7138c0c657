// `generate`: one prompt through the engine, streamed to stdout or printed as one JSON line.
import { Engine, type BackendChoice, type GenerateParams } from '../engine/index.ts';

export interface GenerateOptions {
  model: string;
  adapter?: string;
  scale: number;
  prompt: string;
  maxTokens: number;
  greedy: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
  stop?: string[];
  logprobs?: number;
  backend: string;
  threads?: number;
  gpuLayers?: number;
  context: number;
  json: boolean;
}

const backends = ['cpu', 'cuda', 'auto'];

export async function runGenerate(o: GenerateOptions): Promise<void> {
  if (!backends.includes(o.backend)) throw new Error(`--backend must be one of ${backends.join(', ')}`);
  const engine = await Engine.load({
    modelPath: o.model,
    backend: o.backend as BackendChoice,
    threads: o.threads,
    gpuLayers: o.gpuLayers,
    contextSize: o.context,
    slots: 1,
  });
  try {
    const params: GenerateParams = {
      maxTokens: o.maxTokens,
      greedy: o.greedy,
      temperature: o.temperature,
      topK: o.topK,
      topP: o.topP,
      minP: o.minP,
      repetitionPenalty: o.repetitionPenalty,
      seed: o.seed,
      stop: o.stop,
      logprobs: o.logprobs,
    };
    if (o.adapter) {
      await engine.loadAdapter('adapter', o.adapter, o.scale);
      params.adapters = [{ name: 'adapter', scale: o.scale }];
    }
    const promptTokens = engine.tokenize(o.prompt);
    const gen = engine.generate(promptTokens, params);
    if (!o.json) {
      for await (const chunk of gen) process.stdout.write(chunk.text);
      process.stdout.write('\n');
    }
    const r = await gen.result;
    if (o.json) {
      console.log(
        JSON.stringify({
          text: r.text,
          tokens: r.tokens,
          prompt_tokens: promptTokens,
          stop_reason: r.stopReason,
          usage: { prompt_tokens: r.usage.promptTokens, completion_tokens: r.usage.generatedTokens },
          timings: r.timings,
          ...(r.logprobs ? { logprobs: r.logprobs } : {}),
          backend: engine.backend.name,
        }),
      );
    }
  } finally {
    await engine.close();
  }
}
