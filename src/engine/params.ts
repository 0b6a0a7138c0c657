// Checking a value against a row of the native bounds table (native/params.cpp) under whatever name
// the caller's API gives it, so that /predict says max_new_tokens where the engine says maxTokens.
import type { ParamBound, ParamKey } from './native.ts';

export type { ParamBound, ParamKey };
export type ParamBounds = Record<ParamKey, ParamBound>;

export function withinBound(b: ParamBound, v: number): boolean {
  return (
    Number.isFinite(v) &&
    (b.minExclusive ? v > b.min : v >= b.min) &&
    (b.maxExclusive ? v < b.max : v <= b.max) &&
    (!b.integer || Number.isInteger(v)) &&
    !(v > 0 && v < b.positiveMin)
  );
}

/** "<name> must be <rule>, got <v>": the native message, under the caller's name. */
export function boundMessage(b: ParamBound, name: string, v: unknown): string {
  return `${name} must be ${b.rule}, got ${JSON.stringify(v)}`;
}
