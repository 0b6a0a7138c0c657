// Pieces of OpenAI's response shapes shared by the completions and chat routes.
import type { Response } from 'express';
import type { Chunk, EngineClient, GenerateParams, Generation, GenerationResult } from '../engine/index.ts';
import { endedByShutdown, track, type AppContext } from './context.ts';
import { choiceParams } from './openai-params.ts';
import { cancelOnClose } from './sse.ts';

export const finishReason = (r: GenerationResult) => (r.stopReason === 'length' ? 'length' : 'stop');

/**
 * Per token: its text, log-probability, and the top alternatives as [text, logprob] (texts are the
 * tokens' own, leading space kept); null without logprobs.
 */
export function logprobsOf(engine: EngineClient, chunks: Chunk[], top: number) {
  if (top <= 0) return null;
  const alternatives = chunks.map((c) => (c.top ?? []).slice(0, top));
  const chosen = engine.tokenPieces(chunks.map((c) => c.token ?? 0));
  const pieces = engine.tokenPieces(alternatives.flat().map((t) => t.token));
  let i = 0;
  return {
    tokens: chosen,
    ids: chunks.map((c) => c.token),
    logprobs: chunks.map((c) => c.logprob ?? null),
    top: alternatives.map((list) => list.map((t): [string, number] => [pieces[i++]!, t.logprob])),
  };
}

/**
 * Starts the choices of one OpenAI request: n per input (choice j with seed + j), each tracked and
 * cancelled when the client leaves. A queue that refuses one cancels those already started.
 */
export function startChoices(
  ctx: AppContext,
  res: Response,
  engine: EngineClient,
  inputs: (string | number[])[],
  n: number,
  params: GenerateParams,
): Generation[] {
  const gens: Generation[] = [];
  try {
    for (const input of inputs)
      for (let j = 0; j < n; j++) gens.push(track(ctx, engine.generate(input, choiceParams(params, j))));
  } catch (e) {
    for (const g of gens) g.cancel();
    throw e;
  }
  for (const g of gens) cancelOnClose(res, g);
  return gens;
}

/** Every choice to its end (not streamed): each one's token chunks and result, observed in the metrics. */
export async function collectChoices(ctx: AppContext, gens: Generation[]) {
  const chunks = gens.map(() => [] as Chunk[]);
  await Promise.all(
    gens.map(async (g, i) => {
      for await (const c of g) if (c.token !== null) chunks[i]!.push(c);
    }),
  );
  const results = await Promise.all(gens.map((g) => g.result));
  for (const r of results) {
    const cut = endedByShutdown(ctx, r);
    if (cut) throw cut;
    ctx.metrics.observe(r);
  }
  return { chunks, results };
}
