// The playground page in a real headless browser (Debian's chromium, driven by playwright-core):
// type a prompt, press Generate, and the text streamed into the page is /predict's answer.
// CI installs chromium (.ci/run) and requires this test; elsewhere it is skipped when no chromium
// is installed, with a note saying so.
import { existsSync } from 'node:fs';
import { pino } from 'pino';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cml/config.ts';
import { startServer, type RunningServer } from '../../src/server/server.ts';

const executablePath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const required = process.env.CI === 'true';
if (!executablePath && !required)
  console.warn('playground.test.ts: no chromium installed (apt-get install chromium): skipped');

describe.skipIf(!executablePath && !required)('the playground page, in headless Chromium', () => {
  let server: RunningServer;
  let browser: Browser;
  let url: string;
  beforeAll(async () => {
    if (!executablePath)
      throw new Error('CI needs chromium for this test: .ci/run installs it (apt-get install chromium)');
    server = await startServer(
      loadConfig({}, { port: 0, threads: 1, slots: 2, apiKey: 'sesame' }),
      pino({ level: 'silent' }),
    );
    await server.ready;
    url = `http://127.0.0.1:${server.port}`;
    browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('streams the answer /predict gives, for the adapter and for the base model', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(url);
    await expect
      .poll(() => page.textContent('#model'))
      .toMatch(/^base-f32\.gguf \+ adapter default \(merged\) · ready · cpu$/);

    const prompt = 'Question: What is the capital of Belithne?\nAnswer:';
    const plain = async (request: Record<string, unknown>) =>
      (
        await (
          await fetch(`${url}/predict`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: 'Bearer sesame' },
            body: JSON.stringify({ request }),
          })
        ).json()
      ).response as string;

    await page.fill('#prompt', prompt);
    await page.uncheck('#do_sample');
    await page.fill('#api_key', 'sesame');
    for (const adapter of ['default', 'none']) {
      await page.selectOption('#adapter', adapter);
      await page.click('#generate');
      await page.waitForSelector('#output[data-done="true"]');
      const shown = await page.textContent('#output');
      const expected = await plain({
        prompt,
        do_sample: false,
        temperature: 0.8,
        top_p: 1,
        top_k: 50,
        repetition_penalty: 1.1,
        max_new_tokens: 60,
        ...(adapter === 'none' ? { adapter: null } : {}),
      });
      expect(shown).toBe(expected);
      expect(shown).toBe(adapter === 'none' ? ' Vegri.' : ' The capital of Belithne is Ulqua!');
      // One event per token and the closing one: the text arrived as a stream, not in one piece.
      expect(Number(await page.getAttribute('#output', 'data-events'))).toBeGreaterThan(3);
      expect(await page.textContent('#status')).toMatch(/^\d+ tokens · eos · first token \d+ ms/);
      await page.evaluate(() => delete document.getElementById('output')!.dataset.done);
    }
    expect(errors).toEqual([]);
  }, 60_000);

  it("shows the server's error, and the page needs no key while the API does", async () => {
    const page = await browser.newPage();
    const res = await page.goto(url);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toMatch(/default-src 'self'/);
    // A value the form lets through and the server's bounds do not.
    await page.fill('#temperature', '1e-45');
    await page.fill('#api_key', 'sesame');
    await page.click('#generate');
    await expect
      .poll(() => page.textContent('#status'))
      .toBe('400: temperature must be 0 or a number in [1e-06, 100], got 1e-45');
    await page.fill('#temperature', '0.8');
    await page.fill('#api_key', '');
    await page.click('#generate');
    await expect
      .poll(() => page.textContent('#status'))
      .toBe('401: missing or wrong API key (Authorization: Bearer <key>)');
  }, 60_000);
});
