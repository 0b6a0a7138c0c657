// POST /v1/completions: OpenAI's legacy completions API over the same engine, for the clients people
// already have. `model` picks the adapter: "base" = none, an adapter's name = it, anything else = the
// served default.
import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { BadRequestError } from '../cml/gen-config.ts';
import {
  boundMessage,
  withinBound,
  type Chunk,
  type GenerateParams,
  type GenerationResult,
  type ParamBounds,
} from '../engine/index.ts';
import { HttpError, openAiEnvelope } from './errors.ts';
import { endedByShutdown, readyPredictor, track, type AppContext } from './context.ts';
import { cancelOnClose, streamGeneration, usageOf, wantsStream } from './sse.ts';

function paramsFrom(b: Record<string, unknown>, adapter: string | null, bounds: ParamBounds): GenerateParams {
  const num = (k: string, ok: (n: number) => boolean = () => true): number | undefined => {
    const v = b[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
      throw new BadRequestError(`${k} is out of range or not a number`);
    return v;
  };
  if ((num('n') ?? 1) !== 1 || (num('best_of') ?? 1) !== 1)
    throw new BadRequestError('only n = 1 and best_of = 1 are supported');
  if (b.echo === true) throw new BadRequestError('echo is not supported');
  const stop = b.stop === undefined || b.stop === null ? undefined : typeof b.stop === 'string' ? [b.stop] : b.stop;
  if (stop !== undefined && !(Array.isArray(stop) && stop.every((s) => typeof s === 'string'))) {
    throw new BadRequestError('stop must be a string or an array of strings');
  }
  const temperature = num('temperature', (n) => n >= 0 && n <= 2) ?? 1;
  const p: GenerateParams = {
    maxTokens: num('max_tokens', (n) => withinBound(bounds.maxTokens, n)) ?? 16,
    temperature,
    greedy: temperature === 0,
    topP: num('top_p', (n) => n > 0 && n <= 1) ?? 1,
    presencePenalty: num('presence_penalty', (n) => n >= -2 && n <= 2) ?? 0,
    frequencyPenalty: num('frequency_penalty', (n) => n >= -2 && n <= 2) ?? 0,
    logprobs: num('logprobs', (n) => Number.isInteger(n) && n >= 0 && n <= 20) ?? 0,
  };
  const seed = num('seed', (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32);
  if (seed !== undefined) p.seed = seed;
  if (stop) p.stop = stop as string[];
  if (b.logit_bias !== undefined && b.logit_bias !== null) {
    const lb = b.logit_bias;
    if (typeof lb !== 'object' || Array.isArray(lb))
      throw new BadRequestError('logit_bias must be an object of token id -> bias');
    for (const [id, v] of Object.entries(lb)) {
      if (typeof v !== 'number' || !withinBound(bounds.logitBias, v))
        throw new BadRequestError(boundMessage(bounds.logitBias, `logit_bias['${id}']`, v));
    }
    p.logitBias = lb as Record<number, number>;
  }
  if (adapter) p.adapters = [{ name: adapter }];
  return p;
}

const finishReason = (r: GenerationResult) => (r.stopReason === 'length' ? 'length' : 'stop');

export function completionRoutes(ctx: AppContext): Router {
  const router = Router();
  router.post('/v1/completions', async (req, res) => {
    const predictor = readyPredictor(ctx);
    const b = req.body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object') throw new HttpError(400, 'body must be a JSON object');
    const prompt = Array.isArray(b.prompt) && b.prompt.length === 1 ? b.prompt[0] : b.prompt;
    if (typeof prompt !== 'string') throw new BadRequestError('prompt must be a string (or an array of one string)');
    const names = predictor.engine.adapters().map((a) => a.name);
    const adapter =
      b.model === 'base'
        ? null
        : typeof b.model === 'string' && names.includes(b.model)
          ? b.model
          : ctx.state.adapterName;
    const params = paramsFrom(b, adapter, predictor.engine.bounds);
    if (b.stream !== undefined && b.stream !== null && typeof b.stream !== 'boolean')
      throw new BadRequestError('stream must be true or false');
    const gen = track(ctx, predictor.engine.generate(await predictor.promptFor(prompt, params.parseSpecial), params));
    cancelOnClose(res, gen);

    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = typeof b.model === 'string' ? b.model : ctx.state.modelName;
    const logprobsOf = (chunks: Chunk[]) =>
      params.logprobs
        ? {
            tokens: chunks.map((c) => c.text),
            token_logprobs: chunks.map((c) => c.logprob ?? null),
            top_logprobs: chunks.map((c) =>
              Object.fromEntries((c.top ?? []).map((t) => [predictor.engine.detokenize([t.token]), t.logprob])),
            ),
          }
        : null;

    if (!wantsStream(req, b.stream)) {
      const chunks: Chunk[] = [];
      for await (const c of gen) if (c.token !== null) chunks.push(c);
      const r = await gen.result;
      const cut = endedByShutdown(ctx, r);
      if (cut) throw cut;
      ctx.metrics.observe(r);
      res.json({
        id,
        object: 'text_completion',
        created,
        model,
        choices: [{ text: r.text, index: 0, logprobs: logprobsOf(chunks), finish_reason: finishReason(r) }],
        usage: usageOf(r),
      });
      return;
    }
    const frame = (text: string, finish: string | null, lp: unknown = null) => ({
      id,
      object: 'text_completion',
      created,
      model,
      choices: [{ text, index: 0, logprobs: lp, finish_reason: finish }],
    });
    const r = await streamGeneration(
      res,
      gen,
      {
        chunk: (c) =>
          c.text || c.logprob !== undefined
            ? frame(c.text, null, c.token !== null ? logprobsOf([c]) : null)
            : undefined,
        done: (r) => [frame('', finishReason(r)), '[DONE]'],
        failure: openAiEnvelope,
      },
      (r) => endedByShutdown(ctx, r),
    );
    if (r) ctx.metrics.observe(r);
  });
  return router;
}
