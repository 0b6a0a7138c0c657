// The Express app: body parsing with CML's 5 MB limit, the API key, the routes, /health, /metrics,
// and the one error handler. No generation logic here.
import { randomUUID, timingSafeEqual } from 'node:crypto';
import cors from 'cors';
import express, { type NextFunction, type Request, type Response } from 'express';
import { adapterRoutes } from './adapters-route.ts';
import { chatRoutes } from './chat-route.ts';
import { completionRoutes } from './completions-route.ts';
import type { AppContext } from './context.ts';
import { HttpError, RETRY_AFTER_S, errorHandler } from './errors.ts';
import { PLAYGROUND_ROUTES, playgroundRoutes } from './playground-route.ts';
import { predictRoutes } from './predict-route.ts';
import { tokenizeRoutes } from './tokenize-route.ts';

/** Every path the app serves: the only values of the metrics' `route` label, besides 'other'. */
const ROUTES = new Set([
  '/health',
  '/metrics',
  '/predict',
  '/v1/completions',
  '/v1/chat/completions',
  '/v1/models',
  '/v1/adapters',
  '/tokenize',
  '/detokenize',
  ...PLAYGROUND_ROUTES,
]);

export function createApp(ctx: AppContext): express.Express {
  const app = express();
  app.disable('x-powered-by');

  // CORS only when origins are configured, and before the key check: a browser's preflight carries
  // no Authorization header.
  if (ctx.corsOrigins.length) {
    app.use(
      cors({
        origin: ctx.corsOrigins.includes('*') ? true : ctx.corsOrigins,
        allowedHeaders: ['authorization', 'content-type', 'x-request-id'],
        exposedHeaders: ['x-request-id', 'retry-after'],
      }),
    );
  }

  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    // The client's request id when it sends a sane one, else ours: echoed, and on the log line.
    const given = req.get('x-request-id');
    const id = given && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
    res.set('X-Request-Id', id);
    res.on('close', () => {
      // Never the raw path: a client could mint a label series per request.
      const route = ROUTES.has(req.path) ? req.path : 'other';
      const f = res.locals.failure as { status: number } | undefined;
      // 499 (nginx's "client closed request"): the client left before the response was complete.
      const status = String(res.writableFinished ? (f?.status ?? res.statusCode) : 499);
      ctx.metrics.requests.inc({ route, status });
      if (f || res.statusCode >= 400) ctx.metrics.errors.inc({ route, status });
      if (route !== '/metrics' && route !== '/health') {
        ctx.log.info(
          {
            id,
            method: req.method,
            route,
            status: Number(status),
            ms: Number(process.hrtime.bigint() - started) / 1e6,
          },
          'request',
        );
      }
    });
    next();
  });

  app.get('/health', (_req, res) => {
    const s = ctx.state;
    const h = s.predictor?.engine.health();
    if (s.status !== 'ready') res.set('Retry-After', String(RETRY_AFTER_S));
    res.status(s.status === 'ready' ? 200 : 503).json({
      status: s.status,
      model: s.modelName,
      adapter: s.adapterName,
      ...(s.error ? { error: s.error } : {}),
      ...(h
        ? {
            busy_slots: h.busySlots,
            queued: h.queued,
            backend: h.backend,
            adapter_merged: h.adapterMerged,
            adapter_bank: h.adapterBank,
          }
        : {}),
    });
  });

  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics());
  });

  app.use(playgroundRoutes());

  // The key is checked before the body is read: an unauthenticated client costs no parsing. CML's
  // accessKey (query or body) names the model at CML's gateway, which checks it there; it is
  // accepted and never stands in for this key.
  if (ctx.apiKey) {
    const expected = Buffer.from(`Bearer ${ctx.apiKey}`);
    app.use((req, res, next) => {
      const given = Buffer.from(req.get('authorization') ?? '');
      if (given.length === expected.length && timingSafeEqual(given, expected)) return next();
      res.set('WWW-Authenticate', 'Bearer realm="cml-lora-serve"');
      next(new HttpError(401, 'missing or wrong API key (Authorization: Bearer <key>)'));
    });
  }

  app.use(express.json({ limit: '5mb', type: () => true }));

  app.use(predictRoutes(ctx));
  app.use(completionRoutes(ctx));
  app.use(chatRoutes(ctx));
  app.use(adapterRoutes(ctx));
  app.use(tokenizeRoutes(ctx));
  app.use((req, _res, next) => next(new HttpError(404, `no route ${req.method} ${req.path}`)));
  app.use(errorHandler((err) => ctx.log.error({ err }, 'internal error')));
  return app;
}
