// Chat messages → the prompt text a model was fine-tuned on: its chat template (the GGUF's
// tokenizer.chat_template, or a CHAT_TEMPLATE file) rendered by Hugging Face's own Jinja
// implementation (@huggingface/jinja), as transformers' apply_chat_template renders it
// (add_generation_prompt: true, bos_token / eos_token the tokenizer's). The result carries its own
// BOS where the template writes one, so it is tokenized without adding another, with special tokens
// parsed as control tokens.
import { readFileSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { BadRequestError } from './gen-config.ts';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

const ROLES = ['system', 'developer', 'user', 'assistant'];

/** OpenAI's messages, checked: roles we can render, text content (a string or text parts). */
export function checkMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new BadRequestError('messages must be a non-empty array');
  return v.map((m, i) => {
    const at = `messages[${i}]`;
    if (m === null || typeof m !== 'object') throw new BadRequestError(`${at} must be an object`);
    const { role, content } = m as { role?: unknown; content?: unknown };
    if (typeof role !== 'string' || !ROLES.includes(role)) {
      throw new BadRequestError(
        `${at}.role must be one of ${ROLES.join(', ')}, got ${JSON.stringify(role)} (tools are not supported)`,
      );
    }
    let text: string;
    if (typeof content === 'string') text = content;
    else if (Array.isArray(content)) {
      text = content
        .map((p, j) => {
          const part = p as { type?: unknown; text?: unknown };
          if (part?.type !== 'text' || typeof part.text !== 'string') {
            throw new BadRequestError(`${at}.content[${j}] must be a text part (only text is supported)`);
          }
          return part.text;
        })
        .join('');
    } else throw new BadRequestError(`${at}.content must be a string or an array of text parts`);
    // OpenAI's newer name for the system role; templates know system.
    return { role: (role === 'developer' ? 'system' : role) as ChatMessage['role'], content: text };
  });
}

export class ChatFormat {
  private readonly template: Template;

  constructor(
    /** Where it came from, for the start-up log. */
    readonly source: string,
    text: string,
    private readonly bos: string,
    private readonly eos: string,
  ) {
    this.template = new Template(text);
  }

  /** The prompt for these messages, ending where the assistant's reply begins. */
  render(messages: ChatMessage[]): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: true,
        bos_token: this.bos,
        eos_token: this.eos,
      });
    } catch (e) {
      // Templates raise on what they refuse (roles that do not alternate, a system message where
      // none is allowed): the client's error, in the template's words.
      throw new BadRequestError(`the chat template refused these messages: ${(e as Error).message}`);
    }
  }
}

/** The model's chat format: a template file when given, else the GGUF's; null when it has none. */
export function chatFormat(
  model: { chatTemplate: string | null; bosText: string | null; eosText: string | null },
  file?: string,
): ChatFormat | null {
  const text = file ? readFileSync(file, 'utf8') : model.chatTemplate;
  if (text === null) return null;
  return new ChatFormat(file ?? 'the GGUF (tokenizer.chat_template)', text, model.bosText ?? '', model.eosText ?? '');
}
