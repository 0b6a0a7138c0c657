// POST /predict: CML's envelope around the predict contract, plain or streamed.
import { Router } from 'express';
import { coerceBool } from '../cml/gen-config.ts';
import { HttpError, cmlEnvelope } from './errors.ts';
import { endedByShutdown, readyPredictor, track, type AppContext } from './context.ts';
import { cancelOnClose, streamGeneration, usageOf, wantsStream } from './sse.ts';

export function predictRoutes(ctx: AppContext): Router {
  const router = Router();
  router.post('/predict', async (req, res) => {
    const predictor = readyPredictor(ctx);
    const body: unknown = req.body;
    if (body === null || typeof body !== 'object' || !('request' in body)) {
      throw new HttpError(400, 'body must be {"request": {"prompt": "...", ...}}');
    }
    const request = (body as { request: unknown }).request;
    const flag = (request as { stream?: unknown } | null)?.stream;
    const stream = wantsStream(req, flag === undefined || flag === null ? false : coerceBool('stream', flag));
    const gen = track(ctx, await predictor.start(request));
    cancelOnClose(res, gen);

    if (!stream) {
      const r = await gen.result;
      const cut = endedByShutdown(ctx, r);
      if (cut) throw cut;
      ctx.metrics.observe(r);
      res.json({ success: true, response: r.text });
      return;
    }
    const r = await streamGeneration(
      res,
      gen,
      {
        chunk: (c) => (c.text ? { token: c.text } : undefined),
        done: (r) => [
          { done: true, response: r.text, usage: usageOf(r), stop_reason: r.stopReason, timings: r.timings },
        ],
        failure: cmlEnvelope,
      },
      (r) => endedByShutdown(ctx, r),
    );
    if (r) ctx.metrics.observe(r);
  });
  return router;
}
