// Pieces of OpenAI's response shapes shared by the completions and chat routes.
import type { Chunk, EngineClient, GenerationResult } from '../engine/index.ts';

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
