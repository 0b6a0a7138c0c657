// Prompts tokenized by the checkpoint's own tokenizer.json through Hugging Face's `tokenizers` (the
// Rust library, prebuilt through napi: @anush008/tokenizers, 4.8 MB), so a prompt gets the ids the
// studio's tokenizer(prompt) gives. llama.cpp's tokenizer differs from it on the studio's own
// tokenizers (test/intake/tokenizer-parity.test.ts): Llama 2 on 3 of 35 strings, Mistral v0.3 on 8
// (a space after a special token, a leading space). Encoding runs on a libuv worker, off the JS thread.
import { existsSync } from 'node:fs';
import path from 'node:path';

export interface PromptTokenizer {
  /** tokenizer.json the ids come from. */
  readonly file: string;
  /**
   * The ids of tokenizer(text): special-token text split out, BOS/EOS as its post-processor adds
   * them (addSpecial false: none, as for a rendered chat template, which writes its own).
   */
  encode(text: string, addSpecial?: boolean): Promise<number[]>;
}

/** The checkpoint directory's tokenizer.json, or null when it has none. */
export async function loadHfTokenizer(dir: string): Promise<PromptTokenizer | null> {
  const file = path.join(dir, 'tokenizer.json');
  if (!existsSync(file)) return null;
  const { Tokenizer } = await import('@anush008/tokenizers');
  const t = Tokenizer.fromFile(file);
  return {
    file,
    encode: async (text, addSpecial = true) => (await t.encode(text, null, { addSpecialTokens: addSpecial })).getIds(),
  };
}
