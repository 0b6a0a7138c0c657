// POST /predict: CML's envelope around the predict contract, plain or streamed.
import { Router } from 'express';
import { HttpError, cmlEnvelope, toHttp } from './errors.ts';
import { readyPredictor, type AppContext } from './context.ts';
import { cancelOnClose, openSse, sendEvent, wantsStream } from './sse.ts';

export function predictRoutes(ctx: AppContext): Router {
  const router = Router();
  router.post('/predict', async (req, res) => {
    const predictor = readyPredictor(ctx);
    const body: unknown = req.body;
    if (body === null || typeof body !== 'object' || !('request' in body)) {
      throw new HttpError(400, 'body must be {"request": {"prompt": "...", ...}}');
    }
    const request = (body as { request: unknown }).request;
    const stream = wantsStream(req, (request as { stream?: unknown } | null)?.stream);
    const gen = predictor.start(request);
    cancelOnClose(res, gen);

    if (!stream) {
      const r = await gen.result;
      ctx.metrics.observe(r);
      res.json({ success: true, response: r.text });
      return;
    }
    openSse(res);
    try {
      for await (const chunk of gen) if (chunk.text) sendEvent(res, { token: chunk.text });
      const r = await gen.result;
      ctx.metrics.observe(r);
      const usage = {
        prompt_tokens: r.usage.promptTokens,
        completion_tokens: r.usage.generatedTokens,
        total_tokens: r.usage.promptTokens + r.usage.generatedTokens,
      };
      sendEvent(res, { done: true, response: r.text, usage, stop_reason: r.stopReason, timings: r.timings });
    } catch (err) {
      const f = toHttp(err);
      res.locals.failure = f;
      sendEvent(res, cmlEnvelope(f));
    }
    res.end();
  });
  return router;
}
