// Prometheus metrics (prom-client). Recorded once per request from its final record, never per token.
import client from 'prom-client';
import { schedulerPhases, type EngineStats, type GenerationResult } from '../engine/index.ts';

export class Metrics {
  readonly registry = new client.Registry();
  readonly requests = new client.Counter({
    name: 'cml_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  });
  readonly errors = new client.Counter({
    name: 'cml_request_errors_total',
    help: 'HTTP requests that ended in an error, by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  });
  readonly promptTokens = new client.Counter({
    name: 'cml_prompt_tokens_total',
    help: 'prompt tokens processed',
    registers: [this.registry],
  });
  readonly generatedTokens = new client.Counter({
    name: 'cml_generated_tokens_total',
    help: 'tokens generated',
    registers: [this.registry],
  });
  readonly ttft = new client.Histogram({
    name: 'cml_time_to_first_token_seconds',
    help: 'time from request to its first token',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly decodeRate = new client.Histogram({
    name: 'cml_decode_tokens_per_second',
    help: 'decode speed of each request',
    buckets: [5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200],
    registers: [this.registry],
  });
  readonly duration = new client.Histogram({
    name: 'cml_request_duration_seconds',
    help: 'time from request to its last token',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });

  constructor(stats: () => Pick<EngineStats, 'busySlots' | 'queued' | 'profile'> | null) {
    client.collectDefaultMetrics({ register: this.registry });
    // Read from the engine at scrape time.
    const gauge = (name: string, help: string, pick: (s: Pick<EngineStats, 'busySlots' | 'queued'>) => number) =>
      new client.Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          const s = stats();
          this.set(s ? pick(s) : 0);
        },
      });
    gauge('cml_queue_depth', 'requests waiting for a slot', (s) => s.queued);
    gauge('cml_busy_slots', 'slots generating', (s) => s.busySlots);
    // The scheduler thread's own totals (engine.stats().profile), read at scrape time.
    const total = (name: string, help: string, pick: (p: NonNullable<EngineStats['profile']>) => number) =>
      new client.Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          const p = stats()?.profile;
          this.reset();
          if (p) this.inc(pick(p));
        },
      });
    total('cml_scheduler_steps_total', 'decode steps (one batch each) run by the scheduler thread', (p) => p.steps);
    total(
      'cml_scheduler_adapter_switches_total',
      "changes of the context's adapter set (each costs llama.cpp a rebuild of its compute buffers)",
      (p) => p.adapterSwitches,
    );
    new client.Counter({
      name: 'cml_scheduler_seconds_total',
      help: "the scheduler thread's working time by phase: decode (with the wait for the device), sample, emit, other",
      labelNames: ['phase'] as const,
      registers: [this.registry],
      collect() {
        const p = stats()?.profile;
        this.reset();
        if (!p) return;
        const t = schedulerPhases(p);
        this.inc({ phase: 'decode' }, t.decodeUs / 1e6);
        this.inc({ phase: 'sample' }, t.sampleUs / 1e6);
        this.inc({ phase: 'emit' }, t.emitUs / 1e6);
        this.inc({ phase: 'other' }, t.otherUs / 1e6);
      },
    });
  }

  observe(r: GenerationResult): void {
    this.promptTokens.inc(r.usage.promptTokens);
    this.generatedTokens.inc(r.usage.generatedTokens);
    if (r.usage.generatedTokens > 0) this.ttft.observe(r.timings.ttftMs / 1000);
    if (r.timings.decodeTokensPerSecond > 0) this.decodeRate.observe(r.timings.decodeTokensPerSecond);
    this.duration.observe(r.timings.totalMs / 1000);
  }
}
