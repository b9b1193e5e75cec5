import { createHash } from 'node:crypto';
import { InputError } from '@mobillama/core';
import {
  DecoderModel, generateStream, gridSecondPositionIds, loadTokenizer,
  type GenerationPiece, type GenerationResult, type Tokenizer,
} from '@mobillama/decoder';
import { Projector } from '@mobillama/projector';
import { ClipVisionModel, imageBytes } from '@mobillama/vision';
import { IMAGE_MARKER, IMAGE_TOKEN_ID, getTemplate, type ConversationTemplate, type Turn } from './conversation.js';
import { tokenizeWithImage } from './image-tokens.js';
import { resolveModel } from './resolve.js';
import type {
  AnswerRequest, AnswerResult, ContinuationScore, ContinuationScoreRequest, ImageInput, ModelInfo, ModelOptions,
  ScoreRequest, ScoreResult, VqaModel,
} from './types.js';

/** How many images' projected features a model keeps (see imageEmbeddings). */
export const IMAGE_CACHE_SIZE = 8;

/** A prompt ready for the decoder: ids (with IMAGE_TOKEN_ID) and the embeddings with image features spliced in. */
export interface PreparedPrompt {
  readonly ids: readonly number[];
  readonly embeds: Float32Array;
  readonly seq: number;
  /** A 2-D rotary decoder's second position ids (image tokens column by column); else null. */
  readonly positionIds2: readonly number[] | null;
}

/**
 * A MobiLlama-V (LLaVA-style) model: CLIP vision tower → projector → decoder, with the
 * projected image features replacing the `<image>` marker in the prompt embeddings.
 */
export class MobiLlamaV implements VqaModel {
  /** Projected features of recent images by content hash, least recently used first. */
  private readonly imageCache = new Map<string, Float32Array>();

  private constructor(
    readonly info: ModelInfo,
    readonly decoder: DecoderModel,
    readonly vision: ClipVisionModel,
    readonly projector: Projector,
    readonly tokenizer: Tokenizer,
    readonly template: ConversationTemplate,
  ) {}

  static async load(opts: ModelOptions): Promise<MobiLlamaV> {
    const r = await resolveModel(opts);
    const template = getTemplate(r.template);
    const session = { threads: opts.threads, allowSpinning: opts.allowSpinning };
    const parts: { dispose(): Promise<void> }[] = [];
    try {
      // DecoderModel.load reads float and quantized checkpoints, and quantizes at load when asked.
      const decoder = await DecoderModel.load(r.decoderDir, { ...session, configJson: r.decoderConfig, quantize: opts.quantize, q4: opts.q4 });
      parts.push(decoder);
      const vision = await ClipVisionModel.load(r.visionDir, {
        ...session, featureLayer: r.selection.featureLayer, featureKind: r.selection.featureKind, aspect: r.selection.aspect, quantize: opts.quantize,
        ...(r.visionConfigJson ? { configJson: r.visionConfigJson } : {}),
      });
      parts.push(vision);
      const projector = await Projector.load(r.projectorPath, { ...session, ...(r.projectorType ? { type: r.projectorType as never } : {}) });
      parts.push(projector);
      if (projector.config.inDim !== vision.hiddenSize || projector.config.outDim !== decoder.config.hiddenSize) {
        throw new InputError(`the projector maps ${projector.config.inDim} → ${projector.config.outDim}, but the vision tower gives ${vision.hiddenSize} and the decoder takes ${decoder.config.hiddenSize}`);
      }
      const tokenizer = await loadTokenizer(r.decoderDir);
      const info: ModelInfo = {
        id: r.id, template: template.name, imageSize: vision.config.imageSize, imageTokens: vision.numTokens,
        contextLength: decoder.config.maxPositions,
      };
      return new MobiLlamaV(info, decoder, vision, projector, tokenizer, template);
    } catch (e) {
      await Promise.all(parts.map((p) => p.dispose().catch(() => undefined)));
      throw e;
    }
  }

  /**
   * Projected features of one image: [imageTokens, decoder hidden], a fresh array. The last
   * IMAGE_CACHE_SIZE images' are kept by content: a chat sends its image again every turn and
   * an eval asks several questions of each image, and hashing the bytes costs far less than
   * encoding them (0.35 s for CLIP-L/336).
   */
  async imageEmbeddings(image: ImageInput): Promise<Float32Array> {
    const key = createHash('sha256').update(await imageBytes(image)).digest('hex');
    let features = this.imageCache.get(key);
    if (features === undefined) {
      features = await this.projector.project(await this.vision.encode(image), [1, this.vision.numTokens, this.vision.hiddenSize]);
      if (this.imageCache.size >= IMAGE_CACHE_SIZE) this.imageCache.delete(this.imageCache.keys().next().value!);
    }
    this.imageCache.delete(key);
    this.imageCache.set(key, features);
    return features.slice();
  }

  /** Turns a request into template turns, with the image marker at the first user turn. */
  private turns(req: AnswerRequest): { turns: Turn[]; image?: ImageInput; system?: string } {
    let system: string | undefined;
    let image: ImageInput | undefined;
    const turns: Turn[] = [];
    const messages = req.messages ?? (req.question !== undefined ? [{ role: 'user' as const, content: req.question, image: req.image }] : []);
    if (messages.length === 0) throw new InputError('ask a question: the request has no messages');
    for (const m of messages) {
      if (m.role === 'system') { system = m.content; continue; }
      let text = m.content;
      if (m.image !== undefined) {
        if (image !== undefined) throw new InputError('only one image per conversation is supported');
        image = m.image;
        if (!text.includes(IMAGE_MARKER)) text = `${IMAGE_MARKER}\n${text}`;
      }
      turns.push({ role: m.role, text });
    }
    if (turns.length === 0 || turns[turns.length - 1].role !== 'user') throw new InputError('the last message must be from the user');
    const markers = turns.reduce((n, t) => n + t.text.split(IMAGE_MARKER).length - 1, 0);
    if (markers > (image === undefined ? 0 : 1)) throw new InputError(`the prompt has ${markers} <image> markers for ${image === undefined ? 'no image' : 'one image'}`);
    return { turns, image, system };
  }

  /** Tokenizes a prompt and splices the image features in at the marker. */
  prepare(text: string, image?: ImageInput): Promise<PreparedPrompt> {
    return this.prepareIds(tokenizeWithImage(this.tokenizer, text), image);
  }

  /** Embeddings for ids in which IMAGE_TOKEN_ID marks where the image features go. */
  async prepareIds(ids: readonly number[], image?: ImageInput): Promise<PreparedPrompt> {
    if (ids.filter((i) => i === IMAGE_TOKEN_ID).length > 1) throw new InputError('only one image per prompt is supported');
    const H = this.decoder.config.hiddenSize;
    const imageAt = ids.indexOf(IMAGE_TOKEN_ID);
    if (imageAt < 0) return { ids, embeds: this.decoder.embed(ids), seq: ids.length, positionIds2: null };
    if (image === undefined) throw new InputError('the prompt has an <image> marker but no image was given');
    const features = await this.imageEmbeddings(image);
    const before = ids.slice(0, imageAt), after = ids.slice(imageAt + 1);
    const n = features.length / H;
    const embeds = new Float32Array((before.length + n + after.length) * H);
    embeds.set(this.decoder.embed(before), 0);
    embeds.set(features, before.length * H);
    embeds.set(this.decoder.embed(after), (before.length + n) * H);
    const seq = before.length + n + after.length;
    const positionIds2 = this.decoder.config.rope2d ? gridSecondPositionIds(seq, before.length, n) : null;
    return { ids, embeds, seq, positionIds2 };
  }

  async *stream(req: AnswerRequest): AsyncGenerator<GenerationPiece, AnswerResult> {
    const { turns, image, system } = this.turns(req);
    const { text } = this.template.render(turns, { openAssistant: true, system });
    const p = await this.prepare(text, image);
    const gen = generateStream(this.decoder, this.tokenizer,
      { embeds: p.embeds, seq: p.seq, contextIds: p.ids.filter((i) => i >= 0), ...(p.positionIds2 ? { positionIds2: p.positionIds2 } : {}) },
      { ...req, stop: [...this.template.stop, ...(req.stop ?? [])] });
    // Answers start after "ASSISTANT:"; drop the separator space as LLaVA's outputs.strip() does.
    let started = false;
    for (;;) {
      const r = await gen.next();
      if (r.done) return this.result(r.value);
      let piece = r.value.text;
      if (!started) {
        piece = piece.trimStart();
        started = piece.length > 0;
      }
      yield { token: r.value.token, text: piece };
    }
  }

  private result(g: GenerationResult): AnswerResult {
    return {
      text: g.text.trim(), tokens: g.tokens, finishReason: g.finishReason, timings: g.timings,
      usage: { promptTokens: g.timings.promptTokens, completionTokens: g.tokens.length },
    };
  }

  async answer(req: AnswerRequest): Promise<AnswerResult> {
    const it = this.stream(req);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /** Log-likelihood of an answer to a question about an image, in the model's template. */
  async score(req: ScoreRequest): Promise<ScoreResult> {
    const { turns, image, system } = this.turns({ question: req.question, image: req.image });
    const prompt = this.template.render(turns, { openAssistant: true, system }).text;
    const r = await this.scoreContinuation({ image, prompt, continuation: ` ${req.answer.trim()}` });
    return { logprob: r.total, tokens: r.tokens, tokenLogprobs: r.logprobs };
  }

  /**
   * Log-likelihood of a continuation after image + prompt, no template applied. Text is
   * tokenized whole (prompt + continuation) and the continuation is the tokens after the
   * prompt's, so the boundary is tokenized as the model would see it.
   */
  async scoreContinuation(req: ContinuationScoreRequest): Promise<ContinuationScore> {
    let promptIds: readonly number[], continuationIds: readonly number[];
    if ('promptIds' in req) {
      promptIds = req.promptIds;
      continuationIds = req.continuationIds;
    } else {
      const prefix = tokenizeWithImage(this.tokenizer, req.prompt);
      const full = tokenizeWithImage(this.tokenizer, req.prompt + req.continuation);
      let common = 0;
      while (common < prefix.length && full[common] === prefix[common]) common++;
      promptIds = full.slice(0, common);
      continuationIds = full.slice(common);
    }
    if (continuationIds.length === 0) throw new InputError('the continuation is empty');
    if (continuationIds.includes(IMAGE_TOKEN_ID)) throw new InputError('the continuation cannot contain the image marker');
    if (promptIds.length === 0) throw new InputError('the prompt is empty');
    const p = await this.prepareIds([...promptIds, ...continuationIds], req.image);
    // Continuation token i sits at spliced position (p.seq - n + i) and is predicted by the one before.
    const n = continuationIds.length;
    const out = await this.decoder.forward({
      embeds: p.embeds, batch: 1, seq: p.seq,
      positionIds: [Array.from({ length: p.seq }, (_, i) => i)], attentionMask: [new Array(p.seq).fill(1)],
      ...(p.positionIds2 ? { positionIds2: [p.positionIds2] } : {}),
      logitsIndex: continuationIds.map((_, i) => p.seq - n + i - 1),
    });
    const V = this.decoder.config.vocabSize;
    const logprobs = continuationIds.map((tok, i) => logSoftmaxAt(out.logits.subarray(i * V, (i + 1) * V), tok));
    return { tokens: continuationIds, logprobs, total: logprobs.reduce((a, b) => a + b, 0) };
  }

  async dispose(): Promise<void> {
    this.imageCache.clear();
    await Promise.all([this.decoder.dispose(), this.vision.dispose(), this.projector.dispose()]);
  }
}

function logSoftmaxAt(logits: Float32Array, index: number): number {
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  return logits[index] - max - Math.log(sum);
}
