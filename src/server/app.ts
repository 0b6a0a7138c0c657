// The Express app: body parsing with CML's 5 MB limit, the API key, the routes, /health, /metrics,
// and the one error handler. No generation logic here.
import express, { type NextFunction, type Request, type Response } from 'express';
import { completionRoutes } from './completions-route.ts';
import type { AppContext } from './context.ts';
import { HttpError, errorHandler } from './errors.ts';
import { predictRoutes } from './predict-route.ts';

export function createApp(ctx: AppContext): express.Express {
  const app = express();
  app.disable('x-powered-by');

  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    res.on('close', () => {
      const route = req.route?.path ?? (req.path.startsWith('/v1/') || req.path === '/predict' ? req.path : 'other');
      const f = res.locals.failure as { status: number } | undefined;
      const status = String(f?.status ?? res.statusCode);
      ctx.metrics.requests.inc({ route, status });
      if (f || res.statusCode >= 400) ctx.metrics.errors.inc({ route, status });
      if (route !== '/metrics' && route !== '/health') {
        ctx.log.info({ method: req.method, route, status: Number(status), ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'request');
      }
    });
    next();
  });

  app.get('/health', (_req, res) => {
    const s = ctx.state;
    const stats = s.predictor?.engine.stats();
    res.status(s.status === 'ready' ? 200 : 503).json({
      status: s.status,
      model: s.modelName,
      adapter: s.adapterName,
      ...(s.error ? { error: s.error } : {}),
      ...(stats
        ? {
            busy_slots: stats.busySlots,
            queued: stats.queued,
            backend: s.predictor!.engine.backend.name,
            adapter_merged: s.predictor!.engine.adapters().some((a) => a.merged),
          }
        : {}),
    });
  });

  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics());
  });

  app.use(express.json({ limit: '5mb', type: () => true }));

  if (ctx.apiKey) {
    const expected = `Bearer ${ctx.apiKey}`;
    app.use((req, _res, next) => {
      next(req.get('authorization') === expected ? undefined : new HttpError(401, 'missing or wrong API key (Authorization: Bearer <key>)'));
    });
  }

  app.use(predictRoutes(ctx));
  app.use(completionRoutes(ctx));
  app.use((req, _res, next) => next(new HttpError(404, `no route ${req.method} ${req.path}`)));
  app.use(errorHandler((err) => ctx.log.error({ err }, 'internal error')));
  return app;
}
