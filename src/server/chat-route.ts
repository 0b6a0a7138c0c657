// POST /v1/chat/completions: OpenAI's chat API. The messages become the model's own prompt through
// its chat template (src/cml/chat.ts); parameters map as on /v1/completions (openai-params.ts).
import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { checkMessages } from '../cml/chat.ts';
import { BadRequestError } from '../cml/gen-config.ts';
import type { Chunk } from '../engine/index.ts';
import { endedByShutdown, readyPredictor, track, type AppContext } from './context.ts';
import { HttpError, openAiEnvelope } from './errors.ts';
import { CHAT_KEYS, openAiRequest } from './openai-params.ts';
import { finishReason, logprobsOf } from './openai-shapes.ts';
import { cancelOnClose, streamGeneration, usageOf } from './sse.ts';

export function chatRoutes(ctx: AppContext): Router {
  const router = Router();
  router.post('/v1/chat/completions', async (req, res) => {
    const predictor = readyPredictor(ctx);
    const b = req.body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, 'body must be a JSON object');
    if (!predictor.chat) {
      throw new BadRequestError(
        'the model has no chat template (tokenizer.chat_template): use /v1/completions, or start the server with CHAT_TEMPLATE=<file.jinja>',
      );
    }
    const messages = checkMessages(b.messages);
    const r0 = await openAiRequest(b, CHAT_KEYS, ctx.state.modelName, predictor, (x) => {
      if (x.logprobs === undefined || x.logprobs === null || x.logprobs === false) {
        if (x.top_logprobs !== undefined && x.top_logprobs !== null)
          throw new BadRequestError('top_logprobs needs logprobs: true');
        return 0;
      }
      if (x.logprobs !== true) throw new BadRequestError('logprobs must be true or false');
      const n = x.top_logprobs ?? 0;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 20)
        throw new BadRequestError('top_logprobs must be an integer in [0, 20]');
      return Math.max(n, 1); // the chosen token's own log-probability comes with at least one
    });
    const topN = typeof b.top_logprobs === 'number' ? b.top_logprobs : 0;
    const { params } = r0;
    // The template writes the BOS itself: nothing is added, and its special tokens are control tokens.
    const prompt = predictor.chat.render(messages);
    const input = await predictor.promptFor(prompt, params.parseSpecial, false);
    const gen = track(ctx, predictor.engine.generate(input, { ...params, addSpecial: false }));
    cancelOnClose(res, gen);

    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = typeof b.model === 'string' ? b.model : ctx.state.modelName;
    const lp = (chunks: Chunk[]) => {
      const l = logprobsOf(predictor.engine, chunks, r0.logprobs);
      return (
        l && {
          content: l.tokens.map((token, i) => ({
            token,
            logprob: l.logprobs[i],
            bytes: [...Buffer.from(token)],
            top_logprobs: l.top[i]!.slice(0, topN).map(([t, logprob]) => ({
              token: t,
              logprob,
              bytes: [...Buffer.from(t)],
            })),
          })),
        }
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
        object: 'chat.completion',
        created,
        model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: r.text },
            logprobs: lp(chunks),
            finish_reason: finishReason(r),
          },
        ],
        usage: usageOf(r),
      });
      return;
    }
    const frame = (delta: Record<string, unknown>, finish: string | null, logprobs: unknown = null) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index: 0, delta, logprobs, finish_reason: finish }],
    });
    let first = true;
    const r = await streamGeneration(
      res,
      gen,
      {
        chunk: (c) => {
          if (!c.text && c.logprob === undefined) return undefined;
          const delta = first ? { role: 'assistant', content: c.text } : { content: c.text };
          first = false;
          return frame(delta, null, c.token !== null ? lp([c]) : null);
        },
        done: (r) => [
          frame(first ? { role: 'assistant', content: '' } : {}, finishReason(r)),
          ...(r0.includeUsage
            ? [{ id, object: 'chat.completion.chunk', created, model, choices: [], usage: usageOf(r) }]
            : []),
          '[DONE]',
        ],
        failure: openAiEnvelope,
      },
      (r) => endedByShutdown(ctx, r),
    );
    if (r) ctx.metrics.observe(r);
  });

  // GET /v1/models: the served model, the base model, and every adapter.
  router.get('/v1/models', (_req, res) => {
    const predictor = readyPredictor(ctx);
    const created = Math.floor(Date.now() / 1000);
    const ids = [ctx.state.modelName, 'base', ...predictor.engine.adapters().map((a) => a.name)];
    res.json({
      object: 'list',
      data: [...new Set(ids)].map((id) => ({ id, object: 'model', created, owned_by: 'cml-lora-serve' })),
    });
  });
  return router;
}
