// Structured output: a JSON schema (or "any JSON object") as a GBNF grammar for the engine's grammar
// sampler. The schema converter is node-llama-cpp's (a dependency already; its GbnfJsonSchema
// generator, imported from its files as it exports no entry for it), without the trailing newlines
// its own generation loop wants. It knows a subset of JSON Schema and ignores the rest without a
// word, so a schema is checked first: a keyword it would not honour is a 400 naming it.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BadRequestError } from './gen-config.ts';

const require = createRequire(import.meta.url);
const nlc = path.dirname(require.resolve('node-llama-cpp')); // its dist/
const from = (file: string) => import(pathToFileURL(path.join(nlc, 'utils/gbnfJson', file)).href);

interface Generator {
  generateGbnfFile(root: string): string;
}
interface Converter {
  getGbnfJsonTerminalForGbnfJsonSchema: (
    s: unknown,
    g: Generator,
    st: unknown,
  ) => { resolve(g: Generator, root: boolean): string };
  GbnfGrammarGenerator: new () => Generator;
  GbnfJsonScopeState: new (o: { allowNewLines: boolean; scopePadSpaces: number }) => unknown;
}

// Loaded once. A node-llama-cpp whose files moved costs json_schema alone (a clear 400), never the start.
let converter: Converter | null = null;
let unavailable = '';
try {
  const [a, b, c] = await Promise.all([
    from('utils/getGbnfJsonTerminalForGbnfJsonSchema.js'),
    from('GbnfGrammarGenerator.js'),
    from('utils/GbnfJsonScopeState.js'),
  ]);
  converter = { ...a, ...b, ...c } as Converter;
} catch (e) {
  unavailable = (e as Error).message;
}

/** Any JSON object (llama.cpp's grammars/json.gbnf), for response_format json_object. */
export const JSON_OBJECT_GRAMMAR: string = (() => {
  try {
    return readFileSync(path.join(nlc, '..', 'llama', 'grammars', 'json.gbnf'), 'utf8');
  } catch {
    return '';
  }
})();

// What the converter honours. Annotations change nothing; `required` is met since every property
// is always written.
const KEYWORDS = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'enum',
  'const',
  'oneOf',
  'anyOf',
  'minLength',
  'maxLength',
  'format',
  'description',
  'title',
  '$schema',
  'default',
  'examples',
]);

function check(schema: unknown, at: string): void {
  if (typeof schema === 'boolean') return;
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    throw new BadRequestError(`${at} must be a JSON schema object`);
  }
  const s = schema as Record<string, unknown>;
  for (const k of Object.keys(s)) {
    if (!KEYWORDS.has(k)) throw new BadRequestError(`${at}: the JSON schema keyword '${k}' is not supported`);
  }
  for (const [k, v] of Object.entries((s.properties as Record<string, unknown>) ?? {}))
    check(v, `${at}.properties.${k}`);
  if (s.items !== undefined) check(s.items, `${at}.items`);
  if (typeof s.additionalProperties === 'object') check(s.additionalProperties, `${at}.additionalProperties`);
  for (const key of ['prefixItems', 'oneOf', 'anyOf'] as const) {
    const list = s[key];
    if (list !== undefined) {
      if (!Array.isArray(list)) throw new BadRequestError(`${at}.${key} must be an array`);
      for (const [i, x] of list.entries()) check(x, `${at}.${key}[${i}]`);
    }
  }
}

/** The GBNF of a JSON schema; a BadRequestError naming what is not supported. */
export function grammarForJsonSchema(schema: unknown, at = 'json_schema'): string {
  check(schema, at);
  if (!converter) throw new BadRequestError(`json_schema is unavailable on this server: ${unavailable}`);
  try {
    const g = new converter.GbnfGrammarGenerator();
    const scope = new converter.GbnfJsonScopeState({ allowNewLines: false, scopePadSpaces: 4 });
    return g.generateGbnfFile(converter.getGbnfJsonTerminalForGbnfJsonSchema(schema, g, scope).resolve(g, true));
  } catch (e) {
    throw new BadRequestError(`${at} cannot be turned into a grammar: ${(e as Error).message}`);
  }
}
