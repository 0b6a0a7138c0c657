// The OpenAI routes through the real `openai` SDK against a real server: chat completions (plain,
// streamed, logprobs) rendered by a chat template, models.list, the deployment's gen config as the
// default, and what is refused by name.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import OpenAI from 'openai';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { startServer, type RunningServer } from '../../src/server/server.ts';
import { loadReference, modelDir } from '../helpers.ts';

const log = pino({ level: 'silent' });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'cml-openai-'));
// ChatML, as Qwen's templates write it (tiny-qwen2's tokenizer has <|im_start|> and <|im_end|>).
const CHATML =
  "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const question = loadReference('tiny-qwen2').cases[0]!.prompt;

async function start(env: Record<string, string>, overrides: Parameters<typeof loadConfig>[1]) {
  const s = await startServer(loadConfig(env, { port: 0, threads: 1, slots: 2, ...overrides }), log);
  await s.ready;
  return Object.assign(s, {
    client: new OpenAI({ baseURL: `http://127.0.0.1:${s.port}/v1`, apiKey: 'unused', maxRetries: 0 }),
  });
}

describe('the openai SDK: chat completions through a chat template', () => {
  let s: RunningServer & { client: OpenAI };
  const template = path.join(tmp, 'chatml.jinja');
  beforeAll(async () => {
    writeFileSync(template, CHATML);
    s = await start(
      {},
      { baseModel: path.join(modelDir('tiny-qwen2'), 'base-f32.gguf'), adapter: null, chatTemplateFile: template },
    );
  });
  afterAll(() => s?.close());

  const messages = [{ role: 'user' as const, content: question }];

  it('answers as /v1/completions does on the rendered template', async () => {
    const chat = await s.client.chat.completions.create({ model: 'base', messages, temperature: 0, max_tokens: 12 });
    const rendered = new Template(CHATML).render({ messages, add_generation_prompt: true });
    expect(rendered).toBe(`<|im_start|>user\n${question}<|im_end|>\n<|im_start|>assistant\n`);
    const plain = await s.client.completions.create({
      model: 'base',
      prompt: rendered,
      temperature: 0,
      max_tokens: 12,
    });
    expect(chat.choices[0]!.message).toEqual({ role: 'assistant', content: plain.choices[0]!.text });
    expect(chat.object).toBe('chat.completion');
    expect(chat.usage!.prompt_tokens).toBe(plain.usage!.prompt_tokens);
  });

  it('streamed: role first, the same text, then a usage chunk when asked', async () => {
    const plain = await s.client.chat.completions.create({
      model: 'base-f32.gguf',
      messages,
      temperature: 0,
      max_tokens: 12,
    });
    const stream = await s.client.chat.completions.create({
      model: 'base-f32.gguf',
      messages,
      temperature: 0,
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(plain.choices[0]!.message.content);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: plain.usage!.completion_tokens });
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe(plain.choices[0]!.finish_reason);
  });

  it('logprobs: each token its own text (leading space kept) and top alternatives', async () => {
    const r = await s.client.chat.completions.create({
      model: 'base-f32.gguf',
      messages,
      temperature: 0,
      max_tokens: 6,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = r.choices[0]!.logprobs!.content!;
    expect(content.map((t) => t.token).join('')).toBe(r.choices[0]!.message.content);
    for (const t of content) {
      expect(t.top_logprobs).toHaveLength(3);
      expect(t.top_logprobs[0]!.token).toBe(t.token); // greedy: the chosen token is the top one
      expect(t.top_logprobs[0]!.logprob).toBeCloseTo(t.logprob, 5);
    }
  });

  it('n = 2: two choices, each what a request alone with seed + index gives, plain and streamed', async () => {
    const ask = { model: 'base-f32.gguf', messages, temperature: 1.3, max_tokens: 10, seed: 11 };
    const both = await s.client.chat.completions.create({ ...ask, n: 2 });
    const alone = await Promise.all([0, 1].map((j) => s.client.chat.completions.create({ ...ask, seed: 11 + j })));
    expect(both.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(both.choices.map((c) => c.message.content)).toEqual(alone.map((a) => a.choices[0]!.message.content));
    expect(both.usage!.completion_tokens).toBe(alone[0]!.usage!.completion_tokens + alone[1]!.usage!.completion_tokens);
    expect(both.usage!.prompt_tokens).toBe(alone[0]!.usage!.prompt_tokens); // the prompt, counted once
    const texts = ['', ''];
    for await (const c of await s.client.chat.completions.create({ ...ask, n: 2, stream: true })) {
      for (const ch of c.choices) texts[ch.index] += ch.delta.content ?? '';
    }
    expect(texts).toEqual(both.choices.map((c) => c.message.content));
  });

  it('completions: a list of prompts, token ids, echo', async () => {
    const a = '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n';
    const b = `<|im_start|>user\n${question}<|im_end|>\n<|im_start|>assistant\n`;
    const one = async (prompt: string | number[]) =>
      (await s.client.completions.create({ model: 'base', prompt, temperature: 0, max_tokens: 8 })).choices[0]!.text;
    const list = await s.client.completions.create({ model: 'base', prompt: [a, b], temperature: 0, max_tokens: 8 });
    expect(list.choices.map((c) => c.text)).toEqual([await one(a), await one(b)]);
    const ids = (await (
      await fetch(`${s.client.baseURL.replace(/\/v1$/, '')}/tokenize`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ content: b }),
      })
    ).json()) as { tokens: number[] };
    expect(await one(ids.tokens)).toBe(await one(b));
    const echoed = await s.client.completions.create({
      model: 'base',
      prompt: b,
      temperature: 0,
      max_tokens: 8,
      echo: true,
    });
    expect(echoed.choices[0]!.text).toBe(b + (await one(b)));
    await expect(
      s.client.completions.create({ model: 'base', prompt: b, echo: true, logprobs: 2 }),
    ).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/echo with logprobs/) });
  });

  it('models.list: the served model, the base, the adapters', async () => {
    const ids = [];
    for await (const m of s.client.models.list()) ids.push(m.id);
    expect(ids).toEqual(['base-f32.gguf', 'base']);
  });

  it('refused by name: an unknown model (404), tools and n > 1 (400)', async () => {
    await expect(s.client.chat.completions.create({ model: 'gpt-4o', messages })).rejects.toMatchObject({
      status: 404,
      message: expect.stringMatching(/model "gpt-4o" not found/),
    });
    await expect(
      s.client.chat.completions.create({
        model: 'base-f32.gguf',
        messages,
        tools: [{ type: 'function', function: { name: 'f', parameters: {} } }],
      }),
    ).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/tools is not supported/) });
    await expect(
      s.client.chat.completions.create({ model: 'base-f32.gguf', messages, n: 2, ...({ best_of: 3 } as object) }),
    ).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/best_of/) });
    await expect(
      s.client.chat.completions.create({
        model: 'base-f32.gguf',
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }],
      }),
    ).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/only text/) });
  });
});

describe('structured output', () => {
  let s: RunningServer & { client: OpenAI };
  let url: string;
  beforeAll(async () => {
    s = await start(
      {},
      {
        baseModel: path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
        adapter: path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'),
      },
    );
    url = s.client.baseURL.replace(/\/v1$/, '');
  });
  afterAll(() => s?.close());
  const prompt = loadReference('tiny-qa').cases[0]!.prompt;
  const schema = {
    type: 'object',
    properties: {
      capital: { type: 'string', enum: ['Ulqua', 'Vegri', 'Orlen'] },
      coastal: { type: 'boolean' },
      rank: { type: 'integer' },
    },
    required: ['capital', 'coastal', 'rank'],
  };
  const matches = (v: Record<string, unknown>) => {
    expect(Object.keys(v).sort()).toEqual(['capital', 'coastal', 'rank']);
    expect(['Ulqua', 'Vegri', 'Orlen']).toContain(v.capital);
    expect(typeof v.coastal).toBe('boolean');
    expect(Number.isInteger(v.rank)).toBe(true);
  };

  it('response_format json_schema: the text parses and satisfies the schema, greedy and sampled', async () => {
    for (const temperature of [0, 1.2]) {
      const r = await s.client.completions.create({
        model: 'default',
        prompt,
        temperature,
        seed: 3,
        max_tokens: 60,
        // the completions API has no response_format in the SDK's types; it is sent as is
        ...({ response_format: { type: 'json_schema', json_schema: { name: 'city', schema } } } as object),
      });
      matches(JSON.parse(r.choices[0]!.text));
    }
  });

  it('json_object parses; /predict takes json_schema and a raw grammar', async () => {
    const r = await s.client.completions.create({
      model: 'base',
      prompt,
      temperature: 0,
      max_tokens: 80,
      ...({ response_format: { type: 'json_object' } } as object),
    });
    if (r.choices[0]!.finish_reason === 'stop') expect(() => JSON.parse(r.choices[0]!.text)).not.toThrow();
    else expect(r.choices[0]!.text.startsWith('{')).toBe(true);
    const post = (request: object) =>
      fetch(`${url}/predict`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ request }),
      });
    const p = await (await post({ prompt, do_sample: false, max_new_tokens: 60, json_schema: schema })).json();
    matches(JSON.parse(p.response));
    const g = await (await post({ prompt, do_sample: false, grammar: 'root ::= " Ulqua" | " Vegri"' })).json();
    expect([' Ulqua', ' Vegri']).toContain(g.response);
  });

  it('what a grammar cannot honour is a 400 naming it', async () => {
    const bad = (response_format: object) =>
      s.client.completions.create({ model: 'default', prompt, ...({ response_format } as object) });
    await expect(
      bad({ type: 'json_schema', json_schema: { schema: { type: 'string', pattern: 'x+' } } }),
    ).rejects.toMatchObject({
      status: 400,
      message: expect.stringMatching(/keyword 'pattern' is not supported/),
    });
    await expect(bad({ type: 'xml' })).rejects.toMatchObject({
      status: 400,
      message: expect.stringMatching(/'xml' is not supported/),
    });
    const r = await fetch(`${url}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ request: { prompt, grammar: 'root ::= ("a"' } }),
    });
    expect(r.status).toBe(400);
    expect((await r.json()).errors.join(' ')).toMatch(/grammar does not parse/);
  });
});

describe('the openai SDK against a model without a chat template, with a gen config', () => {
  let s: RunningServer & { client: OpenAI };
  beforeAll(async () => {
    s = await start(
      { FINE_TUNING_STUDIO_GEN_CONFIG_STRING: JSON.stringify({ do_sample: false, max_new_tokens: 5 }) },
      {
        baseModel: path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
        adapter: path.join(modelDir('tiny-qa'), 'adapter-f32.gguf'),
      },
    );
  });
  afterAll(() => s?.close());

  it('chat completions: a 400 that says what to do', async () => {
    await expect(
      s.client.chat.completions.create({ model: 'base-f32.gguf', messages: [{ role: 'user', content: 'hi' }] }),
    ).rejects.toMatchObject({
      status: 400,
      message: expect.stringMatching(/no chat template.*CHAT_TEMPLATE/),
    });
  });

  it("completions take the deployment's gen config as their defaults (greedy, 5 tokens), as /predict does", async () => {
    const prompt = loadReference('tiny-qa').cases[0]!.prompt;
    const r = await s.client.completions.create({ model: 'default', prompt });
    expect(r.usage!.completion_tokens).toBe(5);
    const predict = await fetch(`${s.client.baseURL.replace(/\/v1$/, '')}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ request: { prompt } }),
    });
    expect(r.choices[0]!.text).toBe((await predict.json()).response);
  });

  it('a chat template that does not parse stops the start, naming it', async () => {
    const bad = path.join(tmp, 'bad.jinja');
    writeFileSync(bad, '{% for m in messages %}{{ m.content }');
    const cfg = {
      port: 0,
      threads: 1,
      baseModel: path.join(modelDir('tiny-qa'), 'base-f32.gguf'),
      adapter: null,
      chatTemplateFile: bad,
    };
    const failed = await startServer(loadConfig({}, cfg), log);
    try {
      await expect(failed.ready).rejects.toThrow(/chat template \(CHAT_TEMPLATE .*bad\.jinja\)/);
    } finally {
      await failed.close();
    }
  });

  it('models.list names the adapter', async () => {
    const ids = [];
    for await (const m of s.client.models.list()) ids.push(m.id);
    expect(ids).toEqual(['base-f32.gguf', 'base', 'default']);
  });
});
