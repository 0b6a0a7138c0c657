import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/cml/config.ts';
import { resolveBackend } from '../../src/engine/index.ts';
import { BadRequestError, STUDIO_DEFAULTS, parseGenConfigString, resolveGeneration } from '../../src/cml/gen-config.ts';

describe('parseGenConfigString (like the studio, but it says what went wrong)', () => {
  it('valid JSON', () => {
    expect(parseGenConfigString('{"temperature": 0.2, "max_new_tokens": 5}')).toEqual({
      config: { temperature: 0.2, max_new_tokens: 5 },
    });
  });
  it('single quotes read as double quotes, with a warning', () => {
    const r = parseGenConfigString("{'temperature': 0.2, 'do_sample': false}");
    expect(r.config).toEqual({ temperature: 0.2, do_sample: false });
    expect(r.warning).toMatch(/single quotes/);
  });
  it('broken: the defaults, with a warning naming the problem', () => {
    const r = parseGenConfigString('{temperature: hot');
    expect(r.config).toEqual({});
    expect(r.warning).toMatch(/studio defaults: .+/);
    expect(parseGenConfigString('[1, 2]').warning).toMatch(/not a JSON object/);
  });
  it('empty or unset: the defaults, silently', () => {
    expect(parseGenConfigString('')).toEqual({ config: {} });
    expect(parseGenConfigString(undefined)).toEqual({ config: {} });
  });
  it('values of the wrong type in the env config stop the start, each named', () => {
    const env = {
      FINE_TUNING_STUDIO_GEN_CONFIG_STRING:
        '{"temperature": "hot", "top_k": "7", "do_sample": "maybe", "max_length": 99}',
    };
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(
      'generation config (FINE_TUNING_STUDIO_GEN_CONFIG_STRING): temperature must be a number, got "hot"; do_sample must be true or false, got "maybe"',
    );
    expect(loadConfig({ GEN_CONFIG_STRING: '{"top_k": "7", "max_length": 99}' }).genConfig).toEqual({ top_k: 7 });
  });
});

describe('resolveGeneration: request > env > studio defaults', () => {
  it('studio defaults alone', () => {
    const { params, adapter } = resolveGeneration({ prompt: 'x' }, {}, 'default');
    expect(params).toEqual({
      maxTokens: STUDIO_DEFAULTS.max_new_tokens,
      greedy: false,
      temperature: 0.8,
      topK: 50,
      topP: 1,
      repetitionPenalty: 1.1,
      adapters: [{ name: 'default' }],
    });
    expect(adapter).toBe('default');
  });
  it('env overrides defaults; the request overrides env', () => {
    const env = { temperature: 0.3, max_new_tokens: 20, top_k: 5 };
    const { params } = resolveGeneration({ temperature: 0.9, seed: 3 }, env, null);
    expect(params).toMatchObject({ temperature: 0.9, maxTokens: 20, topK: 5, seed: 3 });
    expect(params.adapters).toBeUndefined();
  });
  it('coerces as Python would', () => {
    const { params } = resolveGeneration(
      { temperature: '0.5', top_k: '3', max_new_tokens: 7.0, do_sample: 'false' },
      {},
      null,
    );
    expect(params).toMatchObject({ temperature: 0.5, topK: 3, maxTokens: 7, greedy: true });
  });
  it('do_sample false or temperature 0 is greedy', () => {
    expect(resolveGeneration({ do_sample: false }, {}, null).params.greedy).toBe(true);
    expect(resolveGeneration({ temperature: 0 }, {}, null).params.greedy).toBe(true);
  });
  it('stop strings and the adapter choice', () => {
    expect(resolveGeneration({ stop: '\n' }, {}, null).params.stop).toEqual(['\n']);
    expect(resolveGeneration({ adapter: null }, {}, 'default').params.adapters).toBeUndefined();
    expect(resolveGeneration({ adapter: 'none' }, {}, 'default').params.adapters).toBeUndefined();
    expect(resolveGeneration({ adapter_scale: '0.5' }, {}, 'default').params.adapters).toEqual([
      { name: 'default', scale: 0.5 },
    ]);
    expect(resolveGeneration({ min_new_tokens: 9 }, {}, null).params.minTokens).toBe(9);
  });
  it('parse_special: unset leaves the engine its default; true/false (or Python spellings) pass on', () => {
    expect(resolveGeneration({}, {}, null).params.parseSpecial).toBeUndefined();
    expect(resolveGeneration({ parse_special: 'false' }, {}, null).params.parseSpecial).toBe(false);
    expect(resolveGeneration({}, { parse_special: false }, null).params.parseSpecial).toBe(false);
    expect(resolveGeneration({ parse_special: 1 }, { parse_special: false }, null).params.parseSpecial).toBe(true);
    expect(() => resolveGeneration({ parse_special: 'maybe' }, {}, null)).toThrow(
      /parse_special must be true or false/,
    );
  });
  // The engine's bounds table, under the studio's names.
  const bounds = resolveBackend('cpu').addon.paramBounds();
  it.each([
    [{ temperature: Number.NaN }, /temperature/],
    [{ temperature: 'hot' }, /temperature must be a number, got "hot"/],
    [{ temperature: 1e-45 }, 'temperature must be 0 or a number in [1e-06, 100], got 1e-45'],
    [{ temperature: '1e39' }, 'temperature must be 0 or a number in [1e-06, 100], got "1e39"'],
    [{ max_new_tokens: -1 }, 'max_new_tokens must be an integer in [1, 16777216], got -1'],
    [{ adapter_scale: 1e5 }, 'adapter_scale must be a number in [-16, 16], got 100000'],
    [{ repetition_penalty: 0 }, /repetition_penalty must be a number in \[0.001, 1000\]/],
    [{ seed: 2 ** 32 }, /seed must be an integer in \[0, 4294967295\]/],
    [{ max_new_tokens: '3.5' }, /max_new_tokens/],
    [{ top_k: true }, /top_k/],
    [{ top_p: 0 }, /top_p/],
    [{ do_sample: 'maybe' }, /do_sample must be true or false/],
    [{ stop: [1] }, /stop/],
    [{ adapter: 3 }, /adapter/],
    [{ num_beams: 4 }, /num_beams > 1 .*not supported/],
  ])('%j is a 400', (request, message) => {
    expect(() => resolveGeneration(request, {}, null, bounds)).toThrow(BadRequestError);
    expect(() => resolveGeneration(request, {}, null, bounds)).toThrow(message);
  });
});

describe('loadConfig: where it listens, and its limits', () => {
  it('timeouts are seconds in (0, 86400]; the connection cap an integer >= 1', () => {
    expect(loadConfig({ HEADERS_TIMEOUT: '2.5', MAX_CONNECTIONS: '8' }).http).toMatchObject({
      headersTimeoutS: 2.5,
      maxConnections: 8,
    });
    expect(() => loadConfig({ HEADERS_TIMEOUT: '0' })).toThrow(
      "HEADERS_TIMEOUT must be a number of seconds in (0, 86400], got '0'",
    );
    expect(() => loadConfig({ DRAIN_TIMEOUT: 'soon' })).toThrow(
      "DRAIN_TIMEOUT must be a number of seconds in (0, 86400], got 'soon'",
    );
    expect(() => loadConfig({ MAX_CONNECTIONS: '0' })).toThrow("MAX_CONNECTIONS must be an integer >= 1, got '0'");
    expect(() => loadConfig({ CHECK_TENSORS: 'maybe' })).toThrow("CHECK_TENSORS must be on or off, got 'maybe'");
    expect(loadConfig({ CHECK_TENSORS: 'off' }).checkTensors).toBe(false);
    expect(loadConfig({}).parseSpecial).toBe(true);
    expect(loadConfig({ PARSE_SPECIAL: 'off' }).parseSpecial).toBe(false);
    expect(() => loadConfig({ PARSE_SPECIAL: 'no way' })).toThrow("PARSE_SPECIAL must be on or off, got 'no way'");
    expect(loadConfig({}).tokenizer).toBe('auto');
    expect(loadConfig({ TOKENIZER: 'llama' }).tokenizer).toBe('llama');
    expect(() => loadConfig({ TOKENIZER: 'hf' })).toThrow("TOKENIZER must be auto or llama, got 'hf'");
    expect(loadConfig({ CHAT_TEMPLATE: 'chat.jinja', CDSW_PROJECT_DIR: '/project' }).chatTemplateFile).toBe(
      '/project/chat.jinja',
    );
    expect(loadConfig({}).chatTemplateFile).toBeUndefined();
  });

  it('ADAPTER_BANK, and the split over several GPUs: SPLIT_MODE, MAIN_GPU, TENSOR_SPLIT', () => {
    expect(loadConfig({}).adapterBank).toBe(8);
    expect(loadConfig({ ADAPTER_BANK: '0' }).adapterBank).toBe(0);
    expect(() => loadConfig({ ADAPTER_BANK: '-1' })).toThrow("ADAPTER_BANK must be an integer >= 0, got '-1'");
    // Unset: llama.cpp's own defaults (nothing passed).
    const none = loadConfig({});
    expect([none.splitMode, none.mainGpu, none.tensorSplit]).toEqual([undefined, undefined, undefined]);
    expect(loadConfig({ SPLIT_MODE: 'row', MAIN_GPU: '1', TENSOR_SPLIT: '3, 1' })).toMatchObject({
      splitMode: 'row',
      mainGpu: 1,
      tensorSplit: [3, 1],
    });
    expect(() => loadConfig({ SPLIT_MODE: 'tensor' })).toThrow(
      "SPLIT_MODE (--split-mode) must be none, layer or row, got 'tensor'",
    );
    expect(() => loadConfig({ MAIN_GPU: '-1' })).toThrow("MAIN_GPU must be an integer >= 0, got '-1'");
    for (const bad of ['3,x', '-1,2', '0,0'])
      expect(() => loadConfig({ TENSOR_SPLIT: bad })).toThrow('TENSOR_SPLIT (--tensor-split) must be shares >= 0');
  });

  it('a CML Application listens on 127.0.0.1:$CDSW_APP_PORT, over PORT; a flag wins over both', () => {
    expect(loadConfig({ CDSW_APP_PORT: '8123', PORT: '9000' })).toMatchObject({ port: 8123, host: '127.0.0.1' });
    expect(loadConfig({ PORT: '9000' }).port).toBe(9000);
    expect(loadConfig({ CDSW_APP_PORT: '8123' }, { port: 7000 }).port).toBe(7000);
    expect(() => loadConfig({ CDSW_APP_PORT: 'x' })).toThrow("CDSW_APP_PORT must be an integer >= 1, got 'x'");
  });
  it("relative locations are the project's: CDSW_PROJECT_DIR, else the working directory", () => {
    expect(loadConfig({ CDSW_PROJECT_DIR: '/home/cdsw' }).projectRoot).toBe('/home/cdsw');
    expect(loadConfig({}).projectRoot).toBe(process.cwd());
  });
});
