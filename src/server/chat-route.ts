// POST /v1/chat/completions: OpenAI's chat API. The messages become the model's own prompt through
// its chat template (src/cml/chat.ts); parameters map as on /v1/completions (openai-params.ts).
import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { checkMessages } from '../cml/chat.ts';
import { BadRequestError } from '../cml/gen-config.ts';
import type { Chunk } from '../engine/index.ts';
import { endedByShutdown, readyPredictor, type AppContext } from './context.ts';
import { HttpError, openAiEnvelope } from './errors.ts';
import { CHAT_KEYS, openAiRequest } from './openai-params.ts';
import { collectChoices, finishReason, logprobsOf, startChoices } from './openai-shapes.ts';
import { streamChoices, usageOfAll } from './sse.ts';

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
    const gens = startChoices(ctx, res, predictor.engine, [input], r0.n, { ...params, addSpecial: false });

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
      const { chunks, results } = await collectChoices(ctx, gens);
      res.json({
        id,
        object: 'chat.completion',
        created,
        model,
        choices: results.map((r, i) => ({
          index: i,
          message: { role: 'assistant', content: r.text },
          logprobs: lp(chunks[i]!),
          finish_reason: finishReason(r),
        })),
        usage: usageOfAll(results, r0.n),
      });
      return;
    }
    const frame = (index: number, delta: Record<string, unknown>, finish: string | null, logprobs: unknown = null) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index, delta, logprobs, finish_reason: finish }],
    });
    const started = gens.map(() => false);
    const results = await streamChoices(
      res,
      gens,
      {
        chunk: (i, c) => {
          if (!c.text && c.logprob === undefined) return undefined;
          const delta = started[i] ? { content: c.text } : { role: 'assistant', content: c.text };
          started[i] = true;
          return frame(i, delta, null, c.token !== null ? lp([c]) : null);
        },
        done: (rs) => [
          ...rs.map((r, i) => frame(i, started[i] ? {} : { role: 'assistant', content: '' }, finishReason(r))),
          ...(r0.includeUsage
            ? [{ id, object: 'chat.completion.chunk', created, model, choices: [], usage: usageOfAll(rs, r0.n) }]
            : []),
          '[DONE]',
        ],
        failure: openAiEnvelope,
      },
      (r) => endedByShutdown(ctx, r),
    );
    for (const r of results ?? []) ctx.metrics.observe(r);
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
