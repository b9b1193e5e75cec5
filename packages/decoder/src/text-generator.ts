import { DecoderModel, type DecoderLoadOptions } from './model.js';
import { generate, generateStream, type GenerateOptions, type GenerationPiece, type GenerationResult } from './generate.js';
import { loadTokenizer } from './tokenizer/tokenizer.js';
import type { Tokenizer } from './tokenizer/tokenizer.js';

/** A decoder folder loaded for text generation: `TextGenerator.fromPretrained(dir)`. */
export class TextGenerator {
  private constructor(readonly model: DecoderModel, readonly tokenizer: Tokenizer) {}

  static async fromPretrained(dir: string, opts: DecoderLoadOptions = {}): Promise<TextGenerator> {
    const model = await DecoderModel.load(dir, opts);
    try {
      return new TextGenerator(model, await loadTokenizer(dir));
    } catch (e) {
      await model.dispose();
      throw e;
    }
  }

  /** Prompt text → ids; BOS as the tokenizer config says unless `addBos` is given. */
  encode(prompt: string, addBos?: boolean): number[] {
    return this.tokenizer.encode(prompt, addBos === undefined ? {} : { addBos });
  }

  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<GenerationResult> {
    return generate(this.model, this.tokenizer, { ids: typeof prompt === 'string' ? this.encode(prompt) : prompt }, opts);
  }

  stream(prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<GenerationPiece, GenerationResult> {
    return generateStream(this.model, this.tokenizer, { ids: typeof prompt === 'string' ? this.encode(prompt) : prompt }, opts);
  }

  dispose(): Promise<void> {
    return this.model.dispose();
  }
}
