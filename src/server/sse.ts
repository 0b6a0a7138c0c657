// Server-Sent Events: per token the server only formats and writes bytes.
import type { Request, Response } from 'express';
import type { Generation } from '../engine/index.ts';

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
