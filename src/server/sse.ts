// Server-Sent Events: per token the server only formats and writes bytes.
import type { Request, Response } from 'express';
import type { Chunk, Generation, GenerationResult } from '../engine/index.ts';
import { toHttp, type HttpFailure } from './errors.ts';

export function wantsStream(req: Request, flag: unknown): boolean {
  return flag === true || flag === 'true' || (req.get('accept') ?? '').includes('text/event-stream');
}

export function openSse(res: Response): void {
  res.status(200).set({
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no', // proxies must not hold the stream back
  });
  res.flushHeaders();
}

export function sendEvent(res: Response, data: unknown): void {
  if (!res.destroyed) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
}

/** A client that goes away cancels its generation; its slot is free at the next decode step. */
export function cancelOnClose(res: Response, gen: Generation): void {
  res.on('close', () => {
    if (!res.writableFinished) gen.cancel();
  });
}

export interface SseFormat {
  /** The event for one chunk, or undefined to send none (e.g. an empty piece). */
  chunk(c: Chunk): unknown;
  /** The closing event(s). */
  done(r: GenerationResult): unknown[];
  /** The event that reports a failure after the headers went out. */
  failure(f: HttpFailure): unknown;
}

/** Streams a generation in a route's own format; resolves with the result, or null after a failure. */
export async function streamGeneration(
  res: Response,
  gen: Generation,
  format: SseFormat,
  endedBy: (r: GenerationResult) => Error | null = () => null,
): Promise<GenerationResult | null> {
  const results = await streamChoices(
    res,
    [gen],
    { chunk: (_i, c) => format.chunk(c), done: ([r]) => format.done(r!), failure: format.failure },
    endedBy,
  );
  return results?.[0] ?? null;
}

export const usageOf = (r: GenerationResult) => ({
  prompt_tokens: r.usage.promptTokens,
  completion_tokens: r.usage.generatedTokens,
  total_tokens: r.usage.promptTokens + r.usage.generatedTokens,
  prompt_tokens_details: { cached_tokens: r.usage.cachedPromptTokens }, // OpenAI's name for it
});

/**
 * Streams several generations of one response (OpenAI's n, several prompts) side by side: each
 * chunk as it comes, then the closing events once all have settled. A failure of one ends all.
 */
export async function streamChoices(
  res: Response,
  gens: Generation[],
  format: {
    chunk(index: number, c: Chunk): unknown;
    done(results: GenerationResult[]): unknown[];
    failure(f: HttpFailure): unknown;
  },
  endedBy: (r: GenerationResult) => Error | null = () => null,
): Promise<GenerationResult[] | null> {
  openSse(res);
  try {
    const results = await Promise.all(
      gens.map(async (g, i) => {
        for await (const c of g) {
          const ev = format.chunk(i, c);
          if (ev !== undefined) sendEvent(res, ev);
        }
        const r = await g.result;
        const cut = endedBy(r); // a shutdown, not the client, cancelled it: the stream ends in an error event
        if (cut) throw cut;
        return r;
      }),
    );
    for (const ev of format.done(results)) sendEvent(res, ev);
    return results;
  } catch (err) {
    for (const g of gens) g.cancel();
    const f = toHttp(err);
    res.locals.failure = f;
    sendEvent(res, format.failure(f));
    return null;
  } finally {
    res.end();
  }
}

/** OpenAI's usage for several choices: each prompt counted once, every completion token. */
export function usageOfAll(results: GenerationResult[], choicesPerPrompt: number) {
  const prompt = results.filter((_, i) => i % choicesPerPrompt === 0).reduce((s, r) => s + r.usage.promptTokens, 0);
  const completion = results.reduce((s, r) => s + r.usage.generatedTokens, 0);
  const cached = results
    .filter((_, i) => i % choicesPerPrompt === 0)
    .reduce((s, r) => s + r.usage.cachedPromptTokens, 0);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}
