// Files the engine writes (merged and quantized models) appear whole or not at all.
import { renameSync, rmSync } from 'node:fs';

/** Runs `write` into a temporary file beside `out`, then renames it into place; a failure leaves nothing. */
export async function writeAtomically<T>(out: string, write: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    const r = await write(tmp);
    renameSync(tmp, out);
    return r;
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
