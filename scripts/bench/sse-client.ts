// A client for POST /predict streaming that records when each token event arrives.

export interface PredictStream {
  start: number;
  /** performance.now() at each {"token"} event */
  times: number[];
  done: {
    usage: { prompt_tokens: number; completion_tokens: number };
    timings: { prefillMs: number; decodeTokensPerSecond: number };
  };
}

export async function streamPredict(url: string, request: Record<string, unknown>): Promise<PredictStream> {
  const start = performance.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ request: { ...request, stream: true } }),
  });
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  const times: number[] = [];
  let buf = '';
  let done: PredictStream['done'] | null = null;
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    buf += dec.decode(value, { stream: true });
    const frames = buf.split('\n\n');
    buf = frames.pop()!;
    for (const f of frames) {
      if (f.startsWith('data: {"token"')) times.push(performance.now());
      else if (f.startsWith('data: {"done"')) done = JSON.parse(f.slice(6)) as PredictStream['done'];
    }
  }
  if (!done) throw new Error(`no final event from ${url} (status ${res.status}): ${buf.slice(0, 200)}`);
  // Tokens that print nothing (control or byte pieces) send no event: there is nothing to time.
  if (times.length < 2)
    throw new Error(
      `${times.length} of ${done.usage.completion_tokens} tokens streamed text: the model's output has nothing to time`,
    );
  return { start, times, done };
}

/** Decode tokens/s between the first and last token event; tokens whose text is held back (a
 * partial UTF-8 character) send no event, so the count comes from the final record. */
export const streamDecodeRate = (s: PredictStream) =>
  (s.done.usage.completion_tokens - 1) / ((s.times.at(-1)! - s.times[0]!) / 1000);
