// Whether a PEFT adapter was trained on a model of the base's family. Shapes alone do not tell: a
// Qwen2 adapter fits a Llama base of the same sizes and converts without a word, then serves
// nonsense. The adapter folder says what it was trained on in two ways, checked where present:
// base_model_name_or_path (its config.json, when that model is on disk) and the tokenizer the
// trainer saved beside it (Fine Tuning Studio saves one with every adapter).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { HF_ARCH, type Arch } from './architectures.ts';
import { IntakeError } from './errors.ts';
import { readGgufHeader } from './gguf-header.ts';
import { hfCacheSnapshots } from './hf-cache.ts';
import { readSentencePiece } from './tokenizer.ts';

const readJson = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;

/** The config.json of the model the adapter names, when it is on disk (a path, or the HF cache). */
function claimedConfig(peftDir: string, claimed: string): string | null {
  const dirs = [
    path.resolve(peftDir, claimed),
    ...(/^[\w.-]+\/[\w.-]+$/.test(claimed) ? hfCacheSnapshots(claimed) : []),
  ];
  return dirs.map((d) => path.join(d, 'config.json')).find((f) => existsSync(f)) ?? null;
}

/** id → token text from a tokenizer.json (its model's vocabulary and added tokens). */
function tokenizerJsonTokens(file: string): string[] {
  const t = readJson(file) as {
    model?: { vocab?: Record<string, number> | [string, number][] };
    added_tokens?: { id: number; content: string }[];
  };
  const out: string[] = [];
  const vocab = t.model?.vocab ?? {};
  const entries = Array.isArray(vocab) ? vocab.map(([s], i) => [s, i] as const) : Object.entries(vocab);
  for (const [s, id] of entries) out[id] = s;
  for (const a of t.added_tokens ?? []) out[a.id] = a.content;
  return out;
}

/** The tokens of the tokenizer saved in a directory (tokenizer.json, else SentencePiece's tokenizer.model). */
function tokensIn(dir: string): string[] | null {
  const json = path.join(dir, 'tokenizer.json');
  if (existsSync(json)) return tokenizerJsonTokens(json);
  const spm = path.join(dir, 'tokenizer.model');
  return existsSync(spm) ? readSentencePiece(spm).map((p) => p.piece) : null;
}

async function baseTokens(base: string): Promise<string[] | null> {
  if (!base.endsWith('.gguf')) return tokensIn(base);
  const tokens = (await readGgufHeader(base)).metadata.get('tokenizer.ggml.tokens');
  return Array.isArray(tokens) ? tokens.map(String) : null;
}

/** Throws IntakeError when the adapter folder shows it was trained on another family than `baseArch`. */
export async function checkAdapterFamily(
  peftDir: string,
  claimed: unknown,
  base: string,
  baseArch: Arch,
): Promise<void> {
  if (typeof claimed === 'string' && claimed !== '') {
    const file = claimedConfig(peftDir, claimed);
    const name = file ? ((readJson(file).architectures as string[] | undefined)?.[0] ?? '') : '';
    const arch = HF_ARCH[name];
    if (file && arch !== baseArch) {
      throw new IntakeError(
        `the adapter was trained on '${claimed}' (${name || 'an unknown architecture'}), but the base is a ${baseArch} model: use the base it was trained on`,
      );
    }
  }
  const mine = tokensIn(peftDir);
  const theirs = mine && (await baseTokens(base));
  if (!mine || !theirs) return;
  // Tokens compared at up to 512 ids spread over the shared range: a fine-tune may add a few tokens
  // at the end, never renumber the vocabulary.
  const n = Math.min(mine.length, theirs.length);
  const step = Math.max(1, Math.floor(n / 512));
  let compared = 0;
  let differ = 0;
  for (let id = 0; id < n; id += step) {
    if (mine[id] === undefined || theirs[id] === undefined) continue;
    compared++;
    if (mine[id] !== theirs[id]) differ++;
  }
  if (compared > 0 && differ > compared / 10) {
    throw new IntakeError(
      `the adapter's tokenizer (${mine.length} tokens, in ${peftDir}) is not the base's (${theirs.length} tokens; ${differ} of ${compared} sampled ids differ): it was trained on another model${typeof claimed === 'string' && claimed ? ` ('${claimed}')` : ''}`,
    );
  }
}
