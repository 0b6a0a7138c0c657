// POST /tokenize and /detokenize, in llama-server's shapes: the ids a text prompt becomes here (the
// checkpoint's tokenizer.json when it serves prompts, else llama.cpp's), and the text of ids.
import { Router } from 'express';
import { BadRequestError } from '../cml/gen-config.ts';
import { readyPredictor, type AppContext } from './context.ts';

export function tokenizeRoutes(ctx: AppContext): Router {
  const router = Router();
  router.post('/tokenize', async (req, res) => {
    const predictor = readyPredictor(ctx);
    const b = req.body as { content?: unknown; add_special?: unknown; parse_special?: unknown } | undefined;
    if (typeof b?.content !== 'string')
      throw new BadRequestError('body must be {"content": "...", "add_special"?: boolean}');
    for (const k of ['add_special', 'parse_special'] as const) {
      if (b[k] !== undefined && typeof b[k] !== 'boolean') throw new BadRequestError(`${k} must be true or false`);
    }
    const addSpecial = b.add_special !== false;
    const parseSpecial = b.parse_special as boolean | undefined;
    const ids = await predictor.promptFor(b.content, parseSpecial, addSpecial);
    res.json({ tokens: typeof ids === 'string' ? predictor.tokenize(ids, addSpecial, parseSpecial) : ids });
  });
  router.post('/detokenize', (req, res) => {
    const predictor = readyPredictor(ctx);
    const tokens = (req.body as { tokens?: unknown } | undefined)?.tokens;
    if (!Array.isArray(tokens)) throw new BadRequestError('body must be {"tokens": [ids]}');
    res.json({ content: predictor.engine.detokenize(tokens as number[]) });
  });
  return router;
}
