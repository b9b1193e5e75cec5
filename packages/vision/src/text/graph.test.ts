import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSession, exportOnnx, openWeights, type HostTensor, type Session } from '@mobillama/core';
import { clipTextConfigFrom, type HfClipModelConfigJson } from './config.js';
import { CLIP_TEXT_IO, buildClipTextGraph } from './graph.js';
import { CLIP_TEXT_FIXTURE, normalizeRows, readGolden, relErr } from './testing.js';
import { findTextPrefix, loadClipText, type LoadedClipText } from './weights.js';

describe('CLIP text tower against the PyTorch reference (clip-text fixture)', () => {
  let golden: Record<string, HostTensor>;
  let text: LoadedClipText;
  const sessions: Session[] = [];
  const session = async (opts: Parameters<typeof buildClipTextGraph>[2]) => {
    const s = await createSession(exportOnnx(buildClipTextGraph(text.config, text.weights, opts)), { threads: 1 });
    sessions.push(s);
    return s;
  };
  const ids = (name: string) => ({ dtype: 'int64' as const, dims: golden[name].shape, data: golden[name].data as BigInt64Array });

  beforeAll(async () => {
    golden = await readGolden();
    text = await loadClipText(CLIP_TEXT_FIXTURE);
  });
  afterAll(async () => {
    for (const s of sessions) await s.release();
    await text.source.close();
  });

  it('reads text_config and the weights (position_ids buffer ignored, projection found)', () => {
    expect(text.config).toMatchObject({
      vocabSize: 629, hiddenSize: 32, numLayers: 2, numHeads: 4, headDim: 8, maxPositions: 77, intermediateSize: 64,
      hiddenAct: 'quick_gelu', bosTokenId: 627, eosTokenId: 628, eosRule: 'first-eos',
    });
    expect(text.prefix).toBe('');
    expect(text.projection?.shape).toEqual([16, 32]);
  });

  it('last_hidden_state (with the padding mask), pooled and projected embeddings match', async () => {
    const s = await session({ projection: text.projection, attentionMask: true, hiddenStates: true });
    const out = await s.run({ [CLIP_TEXT_IO.ids]: ids('label_ids'), [CLIP_TEXT_IO.mask]: ids('label_mask') });
    expect(out[CLIP_TEXT_IO.hidden].dims).toEqual([4, golden.label_ids.shape[1], 32]);
    expect(relErr(out[CLIP_TEXT_IO.hidden].data as Float32Array, golden.last_hidden_state.data as Float32Array)).toBeLessThan(1e-5);
    expect(relErr(out[CLIP_TEXT_IO.pooled].data as Float32Array, golden.text_pooled.data as Float32Array)).toBeLessThan(1e-5);
    const embeds = normalizeRows(out[CLIP_TEXT_IO.embeds].data as Float32Array, 16);
    expect(relErr(embeds, golden.text_embeds.data as Float32Array)).toBeLessThan(1e-5);
  });

  it('the pooled output ignores right padding: no mask needed', async () => {
    const s = await session({});
    const out = await s.run({ [CLIP_TEXT_IO.ids]: ids('label_ids') });
    expect(relErr(out[CLIP_TEXT_IO.pooled].data as Float32Array, golden.text_pooled.data as Float32Array)).toBeLessThan(1e-5);
  });

  it('pools at argmax(input_ids) for legacy eos_token_id 2 configs, at the first EOS otherwise', async () => {
    const legacy = await session({ eosRule: 'argmax' });
    const a = await legacy.run({ [CLIP_TEXT_IO.ids]: ids('rule_ids') });
    expect(relErr(a[CLIP_TEXT_IO.pooled].data as Float32Array, golden.pooled_argmax.data as Float32Array)).toBeLessThan(1e-5);
    const first = await session({ eosRule: 'first-eos', eosTokenId: 300 });
    const b = await first.run({ [CLIP_TEXT_IO.ids]: ids('rule_ids') });
    expect(relErr(b[CLIP_TEXT_IO.pooled].data as Float32Array, golden.pooled_eos300.data as Float32Array)).toBeLessThan(1e-5);
    // config.json decides the rule.
    const shapes = { tokens: [629, 32], positions: 77, intermediate: 64 };
    const cfg = (eos: number): HfClipModelConfigJson => ({ text_config: { vocab_size: 629, hidden_size: 32, intermediate_size: 64, num_attention_heads: 4, num_hidden_layers: 2, eos_token_id: eos } });
    expect(clipTextConfigFrom(cfg(2), shapes).eosRule).toBe('argmax');
    expect(clipTextConfigFrom(cfg(628), shapes).eosRule).toBe('first-eos');
    // A missing eos_token_id means HF's current default, 49407.
    expect(clipTextConfigFrom({ model_type: 'clip_text_model', vocab_size: 629, hidden_size: 32, intermediate_size: 64, num_attention_heads: 4 }, shapes).eosTokenId).toBe(49407);
  });

  it('refuses configs that disagree with the weights, and finds prefixed towers', async () => {
    const shapes = { tokens: [629, 32], positions: 77, intermediate: 64 };
    const base = { vocab_size: 629, hidden_size: 32, intermediate_size: 64, num_attention_heads: 4 };
    expect(() => clipTextConfigFrom({ text_config: { ...base, vocab_size: 49408 } }, shapes)).toThrow(/vocab_size is 49408 but the weights have token_embedding 629x32/);
    expect(() => clipTextConfigFrom({ text_config: { ...base, max_position_embeddings: 64 } }, shapes)).toThrow(/max_position_embeddings/);
    expect(() => clipTextConfigFrom({ text_config: { ...base, num_attention_heads: 5 } }, shapes)).toThrow(/multiple/);
    expect(() => clipTextConfigFrom({ text_config: { ...base, hidden_act: 'tanh' } }, shapes)).toThrow(/hidden_act tanh/);
    expect(() => clipTextConfigFrom({ vision_config: {} }, shapes)).toThrow(/no text_config/);
    expect(findTextPrefix(['cond_stage_model.transformer.text_model.embeddings.token_embedding.weight', 'x'])).toBe('cond_stage_model.transformer.');
    expect(() => findTextPrefix(['vision_model.embeddings.class_embedding'])).toThrow(/not a CLIP text checkpoint/);
    // clip-tiny carries only a few text tensors: a clear error.
    const tiny = `${CLIP_TEXT_FIXTURE}/../clip-tiny`;
    await expect(loadClipText(tiny)).rejects.toThrow(/missing tensor text_model\.encoder\.layers\.0\.mlp\.fc1\.weight/);
    const src = await openWeights(tiny);
    await expect(loadClipText(tiny, { source: src })).rejects.toThrow(/missing tensor/);
    expect(src.has('logit_scale')).toBe(true); // a caller's source stays open
    await src.close();
  });
});
