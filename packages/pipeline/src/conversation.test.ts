import { describe, expect, it } from 'vitest';
import { getTemplate } from './conversation.js';

const SYS = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";

describe('conversation templates (as LLaVA renders them)', () => {
  it('vicuna_v1: multi-turn with "</s>" and no space before the next USER', () => {
    const t = getTemplate('vicuna_v1').render([
      { role: 'user', text: '<image>\nWhat is it?' }, { role: 'assistant', text: 'A cat.' }, { role: 'user', text: 'Colour?' },
    ], { openAssistant: true });
    expect(t.text).toBe(`${SYS} USER: <image>\nWhat is it? ASSISTANT: A cat.</s>USER: Colour? ASSISTANT:`);
    expect(t.text.slice(...t.assistantSpans[0])).toBe(' A cat.</s>');
  });

  it('plain: the image, then the caption and a newline', () => {
    const t = getTemplate('plain').render([{ role: 'user', text: '<image>\nignored' }, { role: 'assistant', text: 'a red circle.' }]);
    expect(t.text).toBe('<image>a red circle.\n');
    expect(t.text.slice(...t.assistantSpans[0])).toBe('a red circle.\n');
  });

  it('mobillama_chat and unknown names', () => {
    const t = getTemplate('mobillama_chat').render([{ role: 'user', text: 'Hi' }], { openAssistant: true });
    expect(t.text).toBe('### Human: Hi\n### Assistant:');
    expect(() => getTemplate('nope')).toThrow(/unknown conversation template "nope"/);
  });
});
