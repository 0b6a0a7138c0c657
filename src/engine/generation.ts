// One running request as seen from JS: an async iterable of text chunks plus a final result.
// Chunks are fed by Engine's single event callback; nothing here runs per token except queueing.
import { fromNative } from './errors.ts';
import type { NativeEvent, TopLogprob } from './native.ts';

export interface Chunk {
  /** Text released by this token (whole UTF-8 characters; may be empty while a stop string is pending). */
  text: string;
  /** The generated token id; null for the text held back until the end. */
  token: number | null;
  logprob?: number;
  top?: TopLogprob[];
}

export type StopReason = 'eos' | 'length' | 'stop' | 'cancelled';

export interface GenerationResult {
  text: string;
  tokens: number[];
  stopReason: StopReason;
  stopString?: string;
  logprobs?: { token: number; logprob: number; top: TopLogprob[] }[];
  /** cachedPromptTokens: how many prompt tokens were not prefilled, their KV reused from the slot's last request. */
  usage: { promptTokens: number; cachedPromptTokens: number; generatedTokens: number };
  timings: { prefillMs: number; ttftMs: number; decodeTokensPerSecond: number; totalMs: number };
}

export class Generation implements AsyncIterable<Chunk> {
  /** Settles when the request ends: resolved (also when cancelled) or rejected with a typed error. */
  readonly result: Promise<GenerationResult>;
  private resolveResult!: (r: GenerationResult) => void;
  private rejectResult!: (e: Error) => void;
  private readonly buffered: Chunk[] = [];
  private wake: (() => void) | null = null;
  private ended = false;
  private failure: Error | null = null;
  private readonly tokens: number[] = [];
  private readonly logprobs: GenerationResult['logprobs'] = [];
  private text = '';

  constructor(
    readonly id: number,
    private readonly cancelFn: (id: number) => void,
  ) {
    this.result = new Promise((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    this.result.catch(() => {}); // consumers that only iterate still see the error there
  }

  /** Stops the request; its slot is free within one decode step and the result says 'cancelled'. */
  cancel(): void {
    if (!this.ended) this.cancelFn(this.id);
  }

  /** @internal called by Engine for each event of this request. */
  handle(ev: NativeEvent): void {
    if (ev.type === 'token') {
      this.tokens.push(ev.token);
      this.text += ev.text;
      const chunk: Chunk = { text: ev.text, token: ev.token };
      if (ev.top) {
        chunk.logprob = ev.logprob;
        chunk.top = ev.top;
        this.logprobs!.push({ token: ev.token, logprob: ev.logprob ?? 0, top: ev.top });
      }
      this.push(chunk);
      return;
    }
    if (ev.type === 'done') {
      if (ev.text) {
        this.text += ev.text;
        this.push({ text: ev.text, token: null });
      }
      this.end();
      this.resolveResult({
        text: this.text,
        tokens: this.tokens,
        stopReason: ev.stopReason,
        ...(ev.stopString !== undefined ? { stopString: ev.stopString } : {}),
        ...(this.logprobs!.length ? { logprobs: this.logprobs } : {}),
        usage: {
          promptTokens: ev.promptTokens,
          cachedPromptTokens: ev.cachedTokens,
          generatedTokens: ev.generatedTokens,
        },
        timings: {
          prefillMs: ev.prefillMs,
          ttftMs: ev.ttftMs,
          decodeTokensPerSecond: ev.decodeTokensPerSecond,
          totalMs: ev.totalMs,
        },
      });
      return;
    }
    this.failure = fromNative(ev);
    this.end();
    this.rejectResult(this.failure);
  }

  private push(chunk: Chunk): void {
    this.buffered.push(chunk);
    this.wake?.();
  }

  private end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Chunk> {
    for (;;) {
      while (this.buffered.length > 0) yield this.buffered.shift()!;
      if (this.ended) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }
}
