import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer, type Tokenizer } from '@mobillama/decoder';
import { IMAGE_TOKEN_ID, getTemplate } from '@mobillama/pipeline';
import { FIXTURE } from './test-fixtures.js';
import { IGNORE_INDEX, VICUNA_V1_SYSTEM, moveImageToFront, preprocessIndependentTurns, preprocessPlain, preprocessVicunaV1, tokenizeSample, vicunaV1Prompt } from './masking.js';

const tok = await loadTokenizer(join(FIXTURE, 'decoder'));
const t = (from: string, value: string) => ({ from, value });
const opts = { modelMaxLength: 2048 };

/** The text the loss is on: every maximal run of supervised ids, decoded. */
function supervised(ids: readonly number[], labels: readonly number[]): string[] {
  const runs: number[][] = [];
  labels.forEach((l, i) => {
    if (l === IGNORE_INDEX) return;
    expect(l).toBe(ids[i]);
    if (i > 0 && labels[i - 1] !== IGNORE_INDEX) runs[runs.length - 1].push(ids[i]);
    else runs.push([ids[i]]);
  });
  return runs.map((r) => tok.decode(r));
}

describe('vicuna_v1 (LLaVA preprocess_v1)', () => {
  it('renders conv_vicuna_v1 exactly, multi-turn included', () => {
    const p = vicunaV1Prompt([t('human', 'Hi?'), t('gpt', 'Hello.'), t('human', 'More?'), t('gpt', 'No.')], 'x');
    expect(p).toBe(`${VICUNA_V1_SYSTEM} USER: Hi? ASSISTANT: Hello.</s>USER: More? ASSISTANT: No.</s>`);
  });

  it('a single turn renders as the inference template does', () => {
    const { text } = getTemplate('vicuna_v1').render([{ role: 'user', text: 'Hi?' }, { role: 'assistant', text: 'Hello.' }]);
    expect(vicunaV1Prompt([t('human', 'Hi?'), t('gpt', 'Hello.')], 'x')).toBe(text);
  });

  it('the loss covers each reply and its </s>, nothing of the prompts or the image', () => {
    const s = preprocessVicunaV1({
      id: 'm', image: 'a.png',
      conversations: [t('human', 'What is in the image?\n<image>'), t('gpt', 'A red circle.'), t('human', 'What color is the circle?'), t('gpt', 'It is red.')],
    }, tok, opts);
    expect(s.ids[0]).toBe(tok.bosId);
    expect(s.ids.filter((i) => i === IMAGE_TOKEN_ID)).toHaveLength(1);
    expect(s.labels[s.ids.indexOf(IMAGE_TOKEN_ID)]).toBe(IGNORE_INDEX);
    expect(supervised(s.ids, s.labels).map((x) => x.trim())).toEqual(['A red circle.</s>', 'It is red.</s>']);
    expect(s.image).toBe('a.png');
  });

  it('moves <image> to the front of its turn, as preprocess_multimodal does', () => {
    expect(moveImageToFront([t('human', 'Look: <image> now'), t('gpt', 'ok')])).toEqual([t('human', '<image>\nLook:  now'), t('gpt', 'ok')]);
  });

  it('a text-only sample is tokenized as plain text ("<image>" stays text) and has no image', () => {
    const s = preprocessVicunaV1({ id: 'txt', conversations: [t('human', 'What is <image>?'), t('gpt', 'A tag.')] }, tok, opts);
    expect(s.ids).not.toContain(IMAGE_TOKEN_ID);
    expect(s.image).toBeNull();
    expect(supervised(s.ids, s.labels).map((x) => x.trim())).toEqual(['A tag.</s>']);
  });

  it('skips a leading gpt turn as LLaVA does', () => {
    const s = preprocessVicunaV1({ id: 'g', conversations: [t('gpt', 'ignored'), t('human', 'Q?'), t('gpt', 'A.')] }, tok, opts);
    expect(tok.decode(s.ids)).not.toContain('ignored');
  });

  it.each([
    [[t('human', 'a'), t('human', 'b')], /sample bad: turn 1 is from human/],
    [[t('human', 'a'), t('robot', 'b')], /sample bad: unknown speaker "robot"/],
  ])('refuses turns that do not alternate (%#)', (conversations, msg) => {
    expect(() => preprocessVicunaV1({ id: 'bad', conversations }, tok, opts)).toThrow(msg);
  });

  it('a tokenization mismatch is an error naming the sample, never a silent skip', () => {
    // A tokenizer that reads "</s>USER" differently inside the whole conversation than in a
    // round on its own (what a non-legacy LLaMA tokenizer does): LLaVA's round lengths stop adding up.
    const odd: Tokenizer = { ...tok, encode: (text, o) => {
      const ids = tok.encode(text, o);
      return text.includes('</s>USER') ? [...ids, 5] : ids;
    }, decode: tok.decode.bind(tok), idToPiece: tok.idToPiece.bind(tok), tokenId: tok.tokenId.bind(tok) };
    const e = { id: 'sample-42', conversations: [t('human', 'a'), t('gpt', 'b'), t('human', 'c'), t('gpt', 'd')] };
    expect(() => preprocessVicunaV1(e, odd, opts)).toThrow(/sample sample-42: tokenization mismatch/);
    // Past model_max_length LLaVA skips the check (the text was cut); so do we.
    expect(() => preprocessVicunaV1(e, odd, { modelMaxLength: 10 })).not.toThrow();
  });
});

describe('plain (LLaVA preprocess_plain)', () => {
  it('trains on the caption and its newline only', () => {
    const s = preprocessPlain({ id: 'p', image: 'i.png', conversations: [t('human', 'Describe.\n<image>'), t('gpt', 'a red circle')] }, tok);
    expect(s.ids.slice(0, 2)).toEqual([tok.bosId, IMAGE_TOKEN_ID]);
    expect(s.labels.slice(0, 2)).toEqual([IGNORE_INDEX, IGNORE_INDEX]);
    expect(s.labels.slice(2)).toEqual(s.ids.slice(2));
    expect(tok.decode(s.ids.slice(2))).toBe('a red circle\n');
  });

  it.each([
    [{ id: 'np', conversations: [t('human', '<image>'), t('gpt', 'x')] }, /needs an image/],
    [{ id: 'n3', image: 'i', conversations: [t('human', '<image>'), t('gpt', 'x'), t('human', 'y')] }, /exactly 2 turns/],
    [{ id: 'nm', image: 'i', conversations: [t('human', 'no marker'), t('gpt', 'x')] }, /no <image>/],
  ])('refuses a sample it cannot use (%#)', (e, msg) => {
    expect(() => preprocessPlain(e, tok)).toThrow(msg);
  });
});

describe('independent turns', () => {
  const entry = {
    id: 'it', image: 'a.png',
    conversations: [t('human', 'What is in the image?\n<image>'), t('gpt', 'A red circle.'), t('human', 'What color is it?'), t('gpt', 'Red.')],
  };

  it('packs each round, as its own single-round sample would be, after the prefix they share', () => {
    const s = preprocessIndependentTurns(entry, tok, opts);
    const alone = [
      preprocessVicunaV1({ ...entry, conversations: [t('human', '<image>\nWhat is in the image?'), t('gpt', 'A red circle.')] }, tok, opts),
      preprocessVicunaV1({ ...entry, conversations: [t('human', '<image>\nWhat color is it?'), t('gpt', 'Red.')] }, tok, opts),
    ];
    const prefix = s.segments!.indexOf(1);
    expect(s.ids.slice(0, prefix)).toEqual(alone[0].ids.slice(0, prefix));
    expect(s.ids.slice(0, prefix)).toContain(IMAGE_TOKEN_ID);
    // Everything up to the first id where the rounds differ (here "What" of both questions too).
    const shared = tok.decode(s.ids.slice(0, prefix).filter((i) => i !== IMAGE_TOKEN_ID));
    expect(shared.startsWith(`<s> ${VICUNA_V1_SYSTEM} USER:`)).toBe(true);
    expect(shared.trimEnd().endsWith('What')).toBe(true);
    for (const [k, a] of alone.entries()) {
      const at = s.segments!.flatMap((g, i) => (g === k + 1 ? [i] : []));
      expect(at.map((i) => s.ids[i])).toEqual(a.ids.slice(prefix));
      expect(at.map((i) => s.labels[i])).toEqual(a.labels.slice(prefix));
    }
    expect(supervised(s.ids, s.labels).map((x) => x.trim())).toEqual(['A red circle.</s>', 'Red.</s>']);
    expect(s.ids.filter((i) => i === IMAGE_TOKEN_ID)).toHaveLength(1);
  });

  it('text-only conversations share their system prompt', () => {
    const s = preprocessIndependentTurns({ id: 'txt', conversations: [t('human', 'Hi?'), t('gpt', 'Hello.'), t('human', 'Name?'), t('gpt', 'Tiny.')] }, tok, opts);
    expect(s.image).toBeNull();
    expect(tok.decode(s.ids.slice(0, s.segments!.indexOf(1)))).toContain(VICUNA_V1_SYSTEM);
    expect(supervised(s.ids, s.labels).map((x) => x.trim())).toEqual(['Hello.</s>', 'Tiny.</s>']);
  });

  it('refuses odd turns and the plain template', () => {
    expect(() => preprocessIndependentTurns({ id: 'odd', conversations: [t('human', 'a'), t('gpt', 'b'), t('human', 'c')] }, tok, opts)).toThrow(/sample odd: independent turns need human, gpt pairs/);
    expect(() => tokenizeSample(entry, tok, 'plain', { ...opts, independentTurns: true })).toThrow(/vicuna_v1/);
  });
});
