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
  openSse(res);
  try {
    for await (const c of gen) {
      const ev = format.chunk(c);
      if (ev !== undefined) sendEvent(res, ev);
    }
    const r = await gen.result;
    const cut = endedBy(r); // a shutdown, not the client, cancelled it: the stream ends in an error event
    if (cut) throw cut;
    for (const ev of format.done(r)) sendEvent(res, ev);
    return r;
  } catch (err) {
    const f = toHttp(err);
    res.locals.failure = f;
    sendEvent(res, format.failure(f));
    return null;
  } finally {
    res.end();
  }
}

export const usageOf = (r: GenerationResult) => ({
  prompt_tokens: r.usage.promptTokens,
  completion_tokens: r.usage.generatedTokens,
  total_tokens: r.usage.promptTokens + r.usage.generatedTokens,
  prompt_tokens_details: { cached_tokens: r.usage.cachedPromptTokens }, // OpenAI's name for it
});
