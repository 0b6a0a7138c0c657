// POST /v1/completions: OpenAI's legacy completions API over the same engine, for the clients people
// already have. Parameters map as in openai-params.ts; `model` picks the adapter ("base": none).
// A prompt is a string, token ids, or a list of either; each gets n choices (index prompt·n + j).
import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { BadRequestError } from '../cml/gen-config.ts';
import type { Chunk } from '../engine/index.ts';
import { endedByShutdown, readyPredictor, type AppContext } from './context.ts';
import { HttpError, openAiEnvelope } from './errors.ts';
import { COMPLETION_KEYS, openAiRequest } from './openai-params.ts';
import { collectChoices, finishReason, logprobsOf, startChoices } from './openai-shapes.ts';
import { streamChoices, usageOfAll } from './sse.ts';

const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');

/** OpenAI's prompt shapes: a string, token ids, or a non-empty list of either (at most 16). */
function promptsOf(p: unknown): (string | number[])[] {
  if (typeof p === 'string' || isIds(p)) return [p];
  if (Array.isArray(p) && p.length > 0 && p.length <= 16 && p.every((x) => typeof x === 'string' || isIds(x))) {
    return p as (string | number[])[];
  }
  throw new BadRequestError('prompt must be a string, an array of token ids, or a list of 1-16 of either');
}

export function completionRoutes(ctx: AppContext): Router {
  const router = Router();
  router.post('/v1/completions', async (req, res) => {
    const predictor = readyPredictor(ctx);
    const b = req.body as Record<string, unknown> | undefined;
    if (!b || typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, 'body must be a JSON object');
    const prompts = promptsOf(b.prompt);
    const r0 = await openAiRequest(b, COMPLETION_KEYS, ctx.state.modelName, predictor, (x) => {
      const v = x.logprobs;
      if (v === undefined || v === null) return 0;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 20)
        throw new BadRequestError('logprobs must be an integer in [0, 20]');
      return v;
    });
    const echo = b.echo === true;
    if (b.echo !== undefined && b.echo !== null && typeof b.echo !== 'boolean')
      throw new BadRequestError('echo must be true or false');
    if (echo && r0.logprobs > 0)
      throw new BadRequestError('echo with logprobs is not supported (no log-probabilities of the prompt)');
    if (prompts.length * r0.n > 16) throw new BadRequestError('at most 16 choices (prompts x n) per request');
    const { params } = r0;
    const inputs = await Promise.all(
      prompts.map((p) => (typeof p === 'string' ? predictor.promptFor(p, params.parseSpecial) : Promise.resolve(p))),
    );
    const echoed = prompts.map((p) => (echo ? (typeof p === 'string' ? p : predictor.engine.detokenize(p)) : ''));
    const gens = startChoices(ctx, res, predictor.engine, inputs, r0.n, params);

    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = typeof b.model === 'string' ? b.model : ctx.state.modelName;
    const lp = (chunks: Chunk[]) => {
      const l = logprobsOf(predictor.engine, chunks, r0.logprobs);
      return (
        l && { tokens: l.tokens, token_logprobs: l.logprobs, top_logprobs: l.top.map((t) => Object.fromEntries(t)) }
      );
    };
    const echoOf = (i: number) => echoed[Math.floor(i / r0.n)]!;

    if (!r0.stream) {
      const { chunks, results } = await collectChoices(ctx, gens);
      res.json({
        id,
        object: 'text_completion',
        created,
        model,
        choices: results.map((r, i) => ({
          text: echoOf(i) + r.text,
          index: i,
          logprobs: lp(chunks[i]!),
          finish_reason: finishReason(r),
        })),
        usage: usageOfAll(results, r0.n),
      });
      return;
    }
    const frame = (index: number, text: string, finish: string | null, logprobs: unknown = null) => ({
      id,
      object: 'text_completion',
      created,
      model,
      choices: [{ text, index, logprobs, finish_reason: finish }],
    });
    const started = gens.map(() => false);
    const results = await streamChoices(
      res,
      gens,
      {
        chunk: (i, c) => {
          if (!c.text && c.logprob === undefined) return undefined;
          const text = (started[i] ? '' : echoOf(i)) + c.text;
          started[i] = true;
          return frame(i, text, null, c.token !== null ? lp([c]) : null);
        },
        done: (rs) => [
          ...rs.map((r, i) => frame(i, started[i] ? '' : echoOf(i), finishReason(r))),
          ...(r0.includeUsage
            ? [{ id, object: 'text_completion', created, model, choices: [], usage: usageOfAll(rs, r0.n) }]
            : []),
          '[DONE]',
        ],
        failure: openAiEnvelope,
      },
      (r) => endedByShutdown(ctx, r),
    );
    for (const r of results ?? []) ctx.metrics.observe(r);
  });
  return router;
}
