import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderModel } from './model.js';
import { generate, generateStream } from './generate.js';
import { loadTokenizer, type Tokenizer } from './tokenizer/index.js';

const TINY = fileURLToPath(new URL('../fixtures/mobillama-tiny-bin', import.meta.url));
// Row 0 of the fixture's golden prompt and its greedy continuation from the PyTorch reference.
const PROMPT = [1, 73, 5, 38, 193, 231, 87];
const GREEDY = [67, 196, 231, 121, 169, 27];

let model: DecoderModel;
let tok: Tokenizer;
beforeAll(async () => {
  model = await DecoderModel.load(TINY, { threads: 1 });
  tok = await loadTokenizer(null); // the bundled LLaMA vocabulary decodes these ids
});
afterAll(() => model.dispose());

describe('generate', () => {
  it('greedy decoding reproduces the reference tokens and reports timings', async () => {
    const r = await generate(model, tok, { ids: PROMPT }, { maxNewTokens: 6, temperature: 0 });
    expect(r.tokens).toEqual(GREEDY);
    expect(r.finishReason).toBe('length');
    expect(r.timings.promptTokens).toBe(7);
    expect(r.text).toBe(tok.decode([...PROMPT.slice(-5), ...GREEDY]).slice(tok.decode(PROMPT.slice(-5)).length));
  });

  it('streams pieces whose concatenation is the text, each a whole UTF-8 string', async () => {
    const it = generateStream(model, tok, { ids: PROMPT }, { maxNewTokens: 6 });
    const pieces: string[] = [];
    let r = await it.next();
    while (!r.done) { pieces.push(r.value.text); r = await it.next(); }
    expect(pieces.join('')).toBe(r.value.text);
    for (const p of pieces) expect(p).toBe(Buffer.from(p, 'utf8').toString('utf8'));
  });

  it('stops at EOS and at stop strings, which are not part of the text', async () => {
    // Make the second greedy token EOS by asking the tokenizer-independent path: treat 196 as EOS.
    const eosModel = Object.create(model, { config: { value: { ...model.config, eosIds: [GREEDY[1]] } } }) as DecoderModel;
    const r = await generate(eosModel, tok, { ids: PROMPT }, { maxNewTokens: 6 });
    expect(r.tokens).toEqual([GREEDY[0]]);
    expect(r.finishReason).toBe('stop');

    const full = await generate(model, tok, { ids: PROMPT }, { maxNewTokens: 6 });
    const stop = full.text.slice(2, 4);
    const cut = await generate(model, tok, { ids: PROMPT }, { maxNewTokens: 6, stop: [stop] });
    expect(cut.finishReason).toBe('stop');
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
  });

  it('is deterministic for a seed when sampling', async () => {
    const a = await generate(model, tok, { ids: PROMPT }, { maxNewTokens: 6, temperature: 1.5, seed: 7 });
    const b = await generate(model, tok, { ids: PROMPT }, { maxNewTokens: 6, temperature: 1.5, seed: 7 });
    expect(a.tokens).toEqual(b.tokens);
  });

  it('accepts a prompt as embeddings and rejects bad prompts clearly', async () => {
    const r = await generate(model, tok, { embeds: model.embed(PROMPT), seq: 7, contextIds: PROMPT }, { maxNewTokens: 6 });
    expect(r.tokens).toEqual(GREEDY);
    await expect(generate(model, tok, { ids: [] })).rejects.toThrow(/prompt is empty/);
    await expect(generate(model, tok, { ids: [1, 99999] })).rejects.toThrow(/outside the model's vocabulary/);
    await expect(generate(model, tok, { ids: PROMPT }, { maxNewTokens: 1000 })).rejects.toThrow(/exceed the model's 128 positions/);
  });

  it('an aborted signal ends generation', async () => {
    const ac = new AbortController();
    ac.abort();
    const r = await generate(model, tok, { ids: PROMPT }, { maxNewTokens: 6, signal: ac.signal });
    expect(r.finishReason).toBe('abort');
    expect(r.tokens).toEqual([]);
  });
});
