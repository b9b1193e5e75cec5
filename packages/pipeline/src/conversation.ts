import { ConfigError } from '@mobillama/core';

/** The image placeholder in prompt text, and its id in token sequences (LLaVA's IMAGE_TOKEN_INDEX). */
export const IMAGE_MARKER = '<image>';
export const IMAGE_TOKEN_ID = -200;

export type Role = 'user' | 'assistant';
export interface Turn {
  readonly role: Role;
  readonly text: string;
}

export interface RenderOptions {
  /** End with the assistant prefix, ready for generation. */
  openAssistant?: boolean;
  /** Replaces the template's system prompt (templates without one ignore it). */
  system?: string;
}

/**
 * A conversation template (LLaVA's conv_templates): how turns become one prompt string.
 * `render` gives the text of a whole conversation; with `openAssistant` it ends with the
 * assistant prefix, ready for generation. `assistantSpans` gives, for training masks, the
 * character ranges of assistant replies (including the closing separator that carries loss).
 */
export interface ConversationTemplate {
  readonly name: string;
  /** Strings that end an assistant reply, for generation stop strings. */
  readonly stop: readonly string[];
  render(turns: readonly Turn[], opts?: RenderOptions): { text: string; assistantSpans: [number, number][] };
}

const VICUNA_SYSTEM = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";

/**
 * vicuna_v1 (LLaVA-1.5, SeparatorStyle.TWO): system + " " + "USER: q" + " " +
 * "ASSISTANT: a" + "</s>" + "USER: q2" + " " + "ASSISTANT:" — no space after "</s>".
 */
const vicunaV1: ConversationTemplate = {
  name: 'vicuna_v1',
  stop: ['</s>', 'USER:'],
  render(turns, opts = {}) {
    let text = `${opts.system ?? VICUNA_SYSTEM} `;
    const spans: [number, number][] = [];
    for (const t of turns) {
      if (t.role === 'user') text += `USER: ${t.text} `;
      else {
        text += 'ASSISTANT:';
        const start = text.length;
        text += ` ${t.text}</s>`;
        spans.push([start, text.length]);
      }
    }
    if (opts.openAssistant) text += 'ASSISTANT:';
    return { text, assistantSpans: spans };
  },
};

/** plain (LLaVA stage-1 pretraining): the image, then the caption and a newline. */
const plain: ConversationTemplate = {
  name: 'plain',
  stop: ['\n'],
  render(turns) {
    let text = '';
    const spans: [number, number][] = [];
    for (const t of turns) {
      if (t.role === 'user') text += t.text.includes(IMAGE_MARKER) ? IMAGE_MARKER : t.text;
      else {
        const start = text.length;
        text += `${t.text}\n`;
        spans.push([start, text.length]);
      }
    }
    return { text, assistantSpans: spans };
  },
};

/** MobiLlama chat: "### Human: ...\n### Assistant: ...". */
const mobillamaChat: ConversationTemplate = {
  name: 'mobillama_chat',
  stop: ['### Human:', '</s>'],
  render(turns, opts = {}) {
    let text = '';
    const spans: [number, number][] = [];
    for (const t of turns) {
      if (t.role === 'user') text += `### Human: ${t.text}\n`;
      else {
        text += '### Assistant:';
        const start = text.length;
        text += ` ${t.text}</s>\n`;
        spans.push([start, text.length]);
      }
    }
    if (opts.openAssistant) text += '### Assistant:';
    return { text, assistantSpans: spans };
  },
};

export const TEMPLATES: Readonly<Record<string, ConversationTemplate>> = {
  vicuna_v1: vicunaV1,
  plain,
  mobillama_chat: mobillamaChat,
};

export function getTemplate(name: string): ConversationTemplate {
  const t = TEMPLATES[name];
  if (!t) throw new ConfigError(`unknown conversation template ${JSON.stringify(name)} (known: ${Object.keys(TEMPLATES).join(', ')})`);
  return t;
}
