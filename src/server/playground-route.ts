// GET /: a small page to try the served model by hand (a CML Application's front page): prompt,
// parameters, the adapter, and the answer streamed from POST /predict. Static files only; the
// page's requests carry the API key the user types, so the page itself needs none.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router } from 'express';

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'playground');
// The page loads nothing from elsewhere and runs no inline script.
const CSP = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

export const PLAYGROUND_ROUTES = ['/', '/playground/app.js', '/playground/style.css', '/favicon.ico'];

export function playgroundRoutes(): Router {
  const router = Router();
  router.use((req, res, next) => {
    if (PLAYGROUND_ROUTES.includes(req.path)) res.set('Content-Security-Policy', CSP);
    next();
  });
  router.get('/', (_req, res) => res.sendFile(path.join(dir, 'index.html')));
  router.get('/favicon.ico', (_req, res) => res.status(204).end()); // browsers ask; nothing to show
  router.use('/playground', express.static(dir, { index: false, fallthrough: true }));
  return router;
}
