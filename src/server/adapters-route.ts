// Adapters over HTTP, hot, while other requests run (behind the API key like every route but the
// probes): list, load from ADAPTERS_DIR (a PEFT folder is converted), rescale, unload.
import { Router } from 'express';
import { BadRequestError } from '../cml/gen-config.ts';
import { readyPredictor, type AppContext } from './context.ts';
import { HttpError } from './errors.ts';

const shown = (a: { name: string; path: string; scale: number; merged: boolean }) => ({
  name: a.name,
  path: a.path,
  scale: a.scale,
  merged: a.merged,
});

export function adapterRoutes(ctx: AppContext): Router {
  const router = Router();
  const library = () => {
    const lib = readyPredictor(ctx).library;
    if (!lib) throw new HttpError(404, 'adapters cannot be managed on this server');
    return lib;
  };
  router.get('/v1/adapters', (_req, res) => {
    const lib = library();
    res.json({ adapters_dir: lib.dir, max_adapters: lib.max, data: lib.list().map(shown) });
  });
  router.post('/v1/adapters', async (req, res) => {
    const b = req.body as { name?: unknown; path?: unknown; scale?: unknown } | undefined;
    if (!b || typeof b.name !== 'string')
      throw new BadRequestError('body must be {"name": "...", "path"?: "...", "scale"?: number}');
    if (b.path !== undefined && typeof b.path !== 'string')
      throw new BadRequestError('path must be a string (inside ADAPTERS_DIR)');
    if (b.scale !== undefined && typeof b.scale !== 'number') throw new BadRequestError('scale must be a number');
    const a = await library().load(b.name, b.path as string | undefined, b.scale as number | undefined);
    res.status(201).json(shown(a));
  });
  router.patch('/v1/adapters/:name', (req, res) => {
    const scale = (req.body as { scale?: unknown } | undefined)?.scale;
    if (typeof scale !== 'number') throw new BadRequestError('body must be {"scale": number}');
    const lib = library();
    lib.setScale(req.params.name, scale);
    res.json(shown(lib.list().find((a) => a.name === req.params.name)!));
  });
  router.delete('/v1/adapters/:name', (req, res) => {
    library().unload(req.params.name);
    res.status(204).end();
  });
  return router;
}
