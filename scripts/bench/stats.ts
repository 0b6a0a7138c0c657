// Small statistics helpers shared by the benchmark's measurements.

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const median = (xs: number[]) => percentile(xs, 50);

/** Gaps between consecutive timestamps (ms). */
export function gaps(times: number[]): number[] {
  return times.slice(1).map((t, i) => t - times[i]!);
}

/**
 * Aggregate decode rate of concurrent streams in their steady state: tokens produced between the
 * moment every stream has its first token and the moment the first stream ends, over that window.
 * Prefill and the ragged tail are left out, as llama-batched-bench leaves out prefill.
 */
export function steadyRate(streams: number[][]): number {
  const from = Math.max(...streams.map((t) => t[0] ?? Infinity));
  const to = Math.min(...streams.map((t) => t.at(-1) ?? -Infinity));
  // No moment when every stream runs (streams of two adapters taking turns on a slow machine can
  // finish one set before the other starts): the rate over the whole run, first token to last.
  if (!(to > from)) {
    const first = Math.min(...streams.map((t) => t[0] ?? Infinity));
    const last = Math.max(...streams.map((t) => t.at(-1) ?? -Infinity));
    const n = streams.reduce((s, t) => s + t.length, 0);
    return last > first ? (n - 1) / ((last - first) / 1000) : Number.NaN;
  }
  let n = 0;
  for (const t of streams) for (const x of t) if (x > from && x <= to) n++;
  return n / ((to - from) / 1000);
}

/** Peak resident memory while `fn` runs, sampled every 50 ms. */
export async function withPeakRss<T>(fn: () => Promise<T>): Promise<{ value: T; peakRssMb: number }> {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  try {
    const value = await fn();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { value, peakRssMb: peak / 2 ** 20 };
  } finally {
    clearInterval(timer);
  }
}
