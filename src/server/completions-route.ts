// POST /v1/completions: OpenAI's legacy completions API over the same engine, for the clients people
// already have. Parameters map as in openai-params.ts; `model` picks the adapter ("base": none).
import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { BadRequestError } from '../cml/gen-config.ts';
import { endedByShutdown, readyPredictor, track, type AppContext } from './context.ts';
import { HttpError, openAiEnvelope } from './errors.ts';
import { COMPLETION_KEYS, openAiRequest } from './openai-params.ts';
import { finishReason, logprobsOf } from './openai-shapes.ts';
import { cancelOnClose, streamGeneration, usageOf } from './sse.ts';
import type { Chunk } from '../engine/index.ts';

export function completionRoutes(ctx: AppContext): Router {
  const router = Router();
  router.post('/v1/completions', async (req, res) => {
    const predictor = readyPredictor(ctx);
    const b = req.body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, 'body must be a JSON object');
    const prompt = Array.isArray(b.prompt) && b.prompt.length === 1 ? b.prompt[0] : b.prompt;
    if (typeof prompt !== 'string') throw new BadRequestError('prompt must be a string (or an array of one string)');
    const r0 = await openAiRequest(b, COMPLETION_KEYS, ctx.state.modelName, predictor, (x) => {
      const v = x.logprobs;
      if (v === undefined || v === null) return 0;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 20)
        throw new BadRequestError('logprobs must be an integer in [0, 20]');
      return v;
    });
    const { params } = r0;
    const gen = track(ctx, predictor.engine.generate(await predictor.promptFor(prompt, params.parseSpecial), params));
    cancelOnClose(res, gen);

    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = typeof b.model === 'string' ? b.model : ctx.state.modelName;
    const lp = (chunks: Chunk[]) => {
      const l = logprobsOf(predictor.engine, chunks, r0.logprobs);
      return (
        l && { tokens: l.tokens, token_logprobs: l.logprobs, top_logprobs: l.top.map((t) => Object.fromEntries(t)) }
      );
    };

    if (!r0.stream) {
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
        choices: [{ text: r.text, index: 0, logprobs: lp(chunks), finish_reason: finishReason(r) }],
        usage: usageOf(r),
      });
      return;
    }
    const frame = (text: string, finish: string | null, logprobs: unknown = null) => ({
      id,
      object: 'text_completion',
      created,
      model,
      choices: [{ text, index: 0, logprobs, finish_reason: finish }],
    });
    const r = await streamGeneration(
      res,
      gen,
      {
        chunk: (c) =>
          c.text || c.logprob !== undefined ? frame(c.text, null, c.token !== null ? lp([c]) : null) : undefined,
        done: (r) => [
          frame('', finishReason(r)),
          ...(r0.includeUsage
            ? [{ id, object: 'text_completion', created, model, choices: [], usage: usageOf(r) }]
            : []),
          '[DONE]',
        ],
        failure: openAiEnvelope,
      },
      (r) => endedByShutdown(ctx, r),
    );
    if (r) ctx.metrics.observe(r);
  });
  return router;
}
