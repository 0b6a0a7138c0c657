// The scheduler thread's time by phase, defined once for the metrics and the benchmarks: decode
// (with the wait for the device), sample, emit (the events' hand-off to JS), and the rest of its
// loop (admission, turn-taking, planning, cancels).
import type { NativeStats } from './native.ts';

export type SchedulerProfile = NonNullable<NativeStats['profile']>;

export interface SchedulerPhases {
  steps: number;
  decodeUs: number;
  sampleUs: number;
  emitUs: number;
  otherUs: number;
}

/** The phases of a profile, or of what happened between two (`since`, then `now`). */
export function schedulerPhases(now: SchedulerProfile, since?: SchedulerProfile): SchedulerPhases {
  const d = (k: 'steps' | 'decodeUs' | 'sampleUs' | 'emitUs' | 'loopUs') => now[k] - (since?.[k] ?? 0);
  const loop = d('loopUs');
  const decodeUs = d('decodeUs');
  const sampleUs = d('sampleUs');
  const emitUs = d('emitUs');
  return { steps: d('steps'), decodeUs, sampleUs, emitUs, otherUs: Math.max(0, loop - decodeUs - sampleUs - emitUs) };
}
