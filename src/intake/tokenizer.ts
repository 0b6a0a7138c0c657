// The vocabulary of a Hugging Face checkpoint as llama.cpp's converter writes it into GGUF: from a
// SentencePiece `tokenizer.model` (protobuf, parsed here) or a BPE `tokenizer.json`, plus the special
// token ids, add-BOS/EOS flags and chat template (gguf-py's SpecialVocab rules).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { KvValue } from './gguf-writer.ts';
import { IntakeError } from './errors.ts';

/** llama.cpp's token types. */
const T = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface Vocab {
  kv: [string, KvValue][];
}

// --- SentencePiece ModelProto: field 1 = repeated SentencePiece {1: piece, 2: score, 3: type} ---

function* protoFields(buf: Buffer): Generator<{ field: number; wire: number; value: number | Buffer }> {
  let i = 0;
  const varint = (): number => {
    let result = 0,
      shift = 0,
      b: number;
    do {
      if (i >= buf.length) throw new IntakeError('tokenizer.model: truncated protobuf');
      b = buf[i++]!;
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    return result;
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8),
      wire = key & 7;
    if (wire === 0) yield { field, wire, value: varint() };
    else if (wire === 1) {
      yield { field, wire, value: buf.subarray(i, i + 8) };
      i += 8;
    } else if (wire === 2) {
      const n = varint();
      yield { field, wire, value: buf.subarray(i, i + n) };
      i += n;
    } else if (wire === 5) {
      yield { field, wire, value: buf.subarray(i, i + 4) };
      i += 4;
    } else throw new IntakeError(`tokenizer.model: unsupported protobuf wire type ${wire}`);
    if (i > buf.length) throw new IntakeError('tokenizer.model: truncated protobuf');
  }
}

interface Piece {
  piece: string;
  score: number;
  type: number;
}

export function readSentencePiece(file: string): Piece[] {
  const pieces: Piece[] = [];
  for (const f of protoFields(readFileSync(file))) {
    if (f.field !== 1 || f.wire !== 2) continue;
    const p: Piece = { piece: '', score: 0, type: 1 };
    for (const g of protoFields(f.value as Buffer)) {
      if (g.field === 1) p.piece = (g.value as Buffer).toString('utf8');
      else if (g.field === 2) p.score = (g.value as Buffer).readFloatLE(0);
      else if (g.field === 3) p.type = g.value as number;
    }
    pieces.push(p);
  }
  if (pieces.length === 0) throw new IntakeError(`${file}: no SentencePiece pieces (not a tokenizer.model?)`);
  return pieces;
}

function jsonIf(file: string): Record<string, unknown> | null {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>) : null;
}

interface AddedToken {
  id: number;
  content: string;
  special?: boolean;
  normalized?: boolean;
}

const looksSpecial = (t: string) =>
  ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
  (t.startsWith('<|') && t.endsWith('|>')) ||
  (t.startsWith('<｜') && t.endsWith('｜>')) ||
  (t.startsWith('<unused') && t.endsWith('>'));

function sentencePieceVocab(dir: string, vocabSize: number, tc: Record<string, unknown> | null): [string, KvValue][] {
  const pieces = readSentencePiece(path.join(dir, 'tokenizer.model'));
  const n = vocabSize || pieces.length;
  const tokens = Array.from({ length: n }, (_, i) => `[PAD${i}]`);
  const scores = new Array<number>(n).fill(-10000);
  const types = new Array<number>(n).fill(T.UNUSED);
  // SentencePiece's own types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte.
  const spmToLlama: Record<number, number> = {
    1: T.NORMAL,
    2: T.UNKNOWN,
    3: T.CONTROL,
    4: T.NORMAL,
    5: T.UNUSED,
    6: T.BYTE,
  };
  pieces.slice(0, n).forEach((p, i) => {
    tokens[i] = p.piece;
    scores[i] = p.score;
    types[i] = spmToLlama[p.type] ?? T.NORMAL;
  });
  const added = jsonIf(path.join(dir, 'added_tokens.json')) as Record<string, number> | null;
  for (const [content, id] of Object.entries(added ?? {})) {
    if (id < n) {
      tokens[id] = content;
      scores[id] = -1000;
      types[id] = T.USER_DEFINED;
    }
  }
  const decoder = (tc?.added_tokens_decoder ?? {}) as Record<string, { content: string; special?: boolean }>;
  for (const [id, t] of Object.entries(decoder)) {
    const i = Number(id);
    if (i < n) {
      tokens[i] = t.content;
      scores[i] = -1000;
      types[i] = t.special ? T.CONTROL : T.USER_DEFINED;
    }
  }
  return [
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.pre', { type: 'string', value: 'default' }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'f32[]', value: scores }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
  ];
}

// Pre-tokenizer names llama.cpp knows, by the split regex of tokenizer.json (llama.cpp itself
// identifies them by hashing a tokenization, which needs the Python tokenizer).
const QWEN2_RE =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_RE =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Bloom's, as its tokenizer.json spells it (a class nested in the negated class) and as llama.cpp's
// regex engine takes it (the same set, flattened).
const BLOOM_RE = [' ?[^(\\s|[.,!?…。，、।۔،])]+', ' ?[^(\\s|.,!?…。，、।۔،)]+'];

function preTokenizer(tok: Record<string, unknown>): string {
  const pre = tok.pre_tokenizer as {
    type?: string;
    pretokenizers?: { type: string; pattern?: { Regex?: string }; use_regex?: boolean }[];
    use_regex?: boolean;
  } | null;
  const steps =
    pre?.type === 'Sequence'
      ? (pre.pretokenizers ?? [])
      : pre
        ? [pre as { type: string; pattern?: { Regex?: string }; use_regex?: boolean }]
        : [];
  const regex = steps.find((s) => s.type === 'Split')?.pattern?.Regex;
  if (regex === QWEN2_RE) return 'qwen2';
  if (regex === LLAMA3_RE) return 'llama-bpe';
  if (regex !== undefined && BLOOM_RE.includes(regex)) return 'bloom';
  if (!regex && steps.some((s) => s.type === 'ByteLevel' && s.use_regex !== false)) return 'gpt-2';
  throw new IntakeError(
    `tokenizer.json: unknown pre-tokenizer (${regex ? `split regex ${JSON.stringify(regex)}` : JSON.stringify(pre)}); supported: qwen2, llama-bpe, bloom, gpt-2`,
  );
}

function bpeVocab(tok: Record<string, unknown>, vocabSize: number): [string, KvValue][] {
  const model = tok.model as { type: string; vocab: Record<string, number>; merges: (string | [string, string])[] };
  if (model?.type !== 'BPE')
    throw new IntakeError(`tokenizer.json: model type ${model?.type} is not supported (BPE only)`);
  const added = (tok.added_tokens ?? []) as AddedToken[];
  const reverse = new Map<number, string>();
  for (const [t, id] of Object.entries(model.vocab)) reverse.set(id, t);
  const addedById = new Map(added.map((a) => [a.id, a]));
  for (const a of added) reverse.set(a.id, a.content);
  const n = vocabSize || reverse.size;
  const tokens: string[] = [];
  const types: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = reverse.get(i);
    if (t === undefined) {
      tokens.push(`[PAD${i}]`);
      types.push(T.UNUSED);
      continue;
    }
    const a = addedById.get(i);
    if (!a) {
      tokens.push(t);
      types.push(T.NORMAL);
      continue;
    }
    if (a.special || looksSpecial(t)) {
      tokens.push(t);
      types.push(T.CONTROL);
    } else {
      tokens.push(t.replaceAll('\u2581', ' '));
      types.push(T.USER_DEFINED);
    }
  }
  const merges = model.merges.map((m) =>
    typeof m === 'string' ? m : m.map((s) => s.replaceAll(' ', '\u0120')).join(' '),
  );
  return [
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'string', value: preTokenizer(tok) }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
    ['tokenizer.ggml.merges', { type: 'string[]', value: merges }],
  ];
}

/**
 * A SentencePiece vocabulary that ships as tokenizer.json only (Llama 2 and Mistral v0.3 checkpoints
 * may): BPE with byte fallback, which llama.cpp's converter reads as LlamaHfVocab into a 'llama'
 * (SentencePiece) vocabulary. Its scores there are a placeholder (-1000 for all); here each token's
 * score is minus the rank of the merge that makes it, so llama.cpp's SentencePiece merges (highest
 * score first) follow the merge order Hugging Face's BPE applies. Byte tokens (<0xXX>) are BYTE,
 * special added tokens CONTROL (the unknown token UNKNOWN, as from tokenizer.model).
 */
export function isSentencePieceJson(tok: Record<string, unknown>): boolean {
  const model = tok.model as { type?: string; byte_fallback?: boolean; ignore_merges?: boolean } | undefined;
  return model?.type === 'BPE' && model.byte_fallback === true && !model.ignore_merges;
}

function sentencePieceJsonVocab(tok: Record<string, unknown>, vocabSize: number): [string, KvValue][] {
  const model = tok.model as {
    vocab: Record<string, number>;
    merges: (string | [string, string])[];
    unk_token?: string;
  };
  const added = (tok.added_tokens ?? []) as AddedToken[];
  const reverse = new Map<number, string>();
  for (const [t, id] of Object.entries(model.vocab)) reverse.set(id, t);
  for (const a of added) reverse.set(a.id, a.content);
  const rank = new Map<string, number>();
  model.merges.forEach((m, i) => {
    const [a, b] = typeof m === 'string' ? m.split(' ') : m;
    const made = `${a}${b}`;
    if (!rank.has(made)) rank.set(made, i);
  });
  const addedById = new Map(added.map((a) => [a.id, a]));
  const n = vocabSize || reverse.size;
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = reverse.get(i);
    const a = addedById.get(i);
    if (t === undefined) {
      tokens.push(`[PAD${i}]`);
      scores.push(-10000);
      types.push(T.UNUSED);
    } else if (a) {
      tokens.push(t);
      scores.push(0);
      types.push(t === model.unk_token ? T.UNKNOWN : a.special ? T.CONTROL : T.USER_DEFINED);
    } else if (/^<0x[0-9A-Fa-f]{2}>$/.test(t)) {
      tokens.push(t);
      scores.push(0);
      types.push(T.BYTE);
    } else {
      tokens.push(t);
      scores.push(-(rank.get(t) ?? model.merges.length + i));
      types.push(T.NORMAL);
    }
  }
  return [
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.pre', { type: 'string', value: 'default' }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'f32[]', value: scores }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
  ];
}

const SPECIAL = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const;
const GGUF_NAME: Record<string, string> = {
  bos: 'bos',
  eos: 'eos',
  unk: 'unknown',
  sep: 'seperator',
  pad: 'padding',
  cls: 'cls',
  mask: 'mask',
};

/**
 * The chat template(s), as gguf-py writes them: a string is tokenizer.chat_template; a list of
 * {name, template} (a named set, such as default / tool_use) writes each under
 * tokenizer.chat_template.<name> (non-alphanumerics as _), lists the names in
 * tokenizer.chat_templates, and the one named default as tokenizer.chat_template.
 */
function chatTemplates(t: unknown): [string, KvValue][] {
  if (typeof t === 'string') return [['tokenizer.chat_template', { type: 'string', value: t }]];
  if (!Array.isArray(t)) return [];
  const out: [string, KvValue][] = [];
  const names: string[] = [];
  let fallback: string | null = null;
  for (const choice of t as { name?: unknown; template?: unknown }[]) {
    const name = String(choice?.name ?? '').replace(/[^A-Za-z0-9]/g, '_');
    if (!name || typeof choice.template !== 'string') continue;
    if (name === 'default') fallback = choice.template;
    else if (!names.includes(name)) {
      names.push(name);
      out.push([`tokenizer.chat_template.${name}`, { type: 'string', value: choice.template }]);
    }
  }
  if (names.length) out.push(['tokenizer.chat_templates', { type: 'string[]', value: names }]);
  if (fallback !== null) out.push(['tokenizer.chat_template', { type: 'string', value: fallback }]);
  return out;
}

/** Tokenizer KVs for a checkpoint directory: tokens, scores/merges, types, special ids, flags, template. */
export function readVocab(dir: string, config: Record<string, unknown>): [string, KvValue][] {
  const vocabSize = Number(config.vocab_size ?? 0);
  const tc = jsonIf(path.join(dir, 'tokenizer_config.json'));
  const tok = jsonIf(path.join(dir, 'tokenizer.json'));
  let kv: [string, KvValue][];
  if (existsSync(path.join(dir, 'tokenizer.model'))) kv = sentencePieceVocab(dir, vocabSize, tc);
  else if (tok && isSentencePieceJson(tok)) kv = sentencePieceJsonVocab(tok, vocabSize);
  else if (tok) kv = bpeVocab(tok, vocabSize);
  else throw new IntakeError(`${dir}: no tokenizer.model or tokenizer.json`);

  // Special ids: tokenizer_config's <typ>_token found among tokenizer.json's added tokens first,
  // then config.json's <typ>_token_id (gguf-py's order); the first found wins.
  const ids = new Map<string, number>();
  const added = (tok?.added_tokens ?? []) as AddedToken[];
  const n = vocabSize || Infinity;
  const set = (typ: string, id: unknown) => {
    if (typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < n && !ids.has(typ)) ids.set(typ, id);
  };
  for (const typ of SPECIAL) {
    const entry = tc?.[`${typ}_token`];
    const content = typeof entry === 'string' ? entry : (entry as { content?: string } | undefined)?.content;
    if (content !== undefined) set(typ, added.find((a) => a.content === content)?.id);
  }
  for (const typ of SPECIAL) set(typ, config[`${typ}_token_id`]);
  for (const [typ, id] of ids) kv.push([`tokenizer.ggml.${GGUF_NAME[typ]}_token_id`, { type: 'u32', value: id }]);
  // Whether BOS/EOS are added: tokenizer.json's post-processor says it (gguf-py's reading: a
  // TemplateProcessing whose single template starts with the BOS or CLS adds it, ends with the EOS
  // adds that; RobertaProcessing adds both), and tokenizer_config's add_<typ>_token wins.
  const adds = new Map<string, boolean>();
  const content = (typ: string) => {
    const e = tc?.[`${typ}_token`];
    return typeof e === 'string' ? e : (e as { content?: string } | undefined)?.content;
  };
  type Piece = { SpecialToken?: { id?: string } };
  const pp = tok?.post_processor as { type?: string; processors?: unknown[]; single?: Piece[] } | null | undefined;
  for (const p of (pp?.processors ?? (pp ? [pp] : [])) as { type?: string; single?: Piece[] }[]) {
    if (p.type === 'RobertaProcessing') for (const typ of ['bos', 'eos', 'sep']) adds.set(typ, true);
    if (p.type !== 'TemplateProcessing' || (p.single?.length ?? 0) < 2) continue;
    const first = p.single![0]?.SpecialToken?.id;
    const last = p.single!.at(-1)?.SpecialToken?.id;
    if (first) adds.set('bos', !tc || first === content('bos') || first === content('cls'));
    if (last) adds.set('eos', !tc || last === content('eos'));
  }
  for (const typ of SPECIAL) {
    const flag = tc?.[`add_${typ}_token`];
    if (typeof flag === 'boolean') adds.set(typ, flag);
  }
  for (const typ of SPECIAL) {
    const flag = adds.get(typ);
    if (flag !== undefined) kv.push([`tokenizer.ggml.add_${typ}_token`, { type: 'bool', value: flag }]);
  }
  const template =
    tc?.chat_template ??
    (existsSync(path.join(dir, 'chat_template.jinja'))
      ? readFileSync(path.join(dir, 'chat_template.jinja'), 'utf8')
      : (jsonIf(path.join(dir, 'chat_template.json'))?.chat_template as unknown));
  kv.push(...chatTemplates(template));
  return kv;
}
