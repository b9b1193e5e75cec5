/**
 * A Hugging Face fast tokenizer (`tokenizer.json`) run by @huggingface/tokenizers, with the
 * BOS/EOS policy HF transformers takes from `tokenizer_config.json`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './tokenizer.js';
import type { TokenizerConfig } from './tokenizer-config.js';
import { readTokenizerConfig } from './tokenizer-config.js';

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The special token a TemplateProcessing post-processor puts first for one sequence, if any. */
function templateLeadingToken(tokenizerJson: Record<string, unknown>): string | undefined {
  const pp = tokenizerJson.post_processor;
  if (!isRecord(pp)) return undefined;
  const processors = pp.type === 'Sequence' && Array.isArray(pp.processors) ? pp.processors : [pp];
  for (const p of processors) {
    if (!isRecord(p) || p.type !== 'TemplateProcessing' || !Array.isArray(p.single)) continue;
    const first: unknown = p.single[0];
    if (isRecord(first) && isRecord(first.SpecialToken) && typeof first.SpecialToken.id === 'string') {
      return first.SpecialToken.id;
    }
  }
  return undefined;
}

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly addBosByDefault: boolean;
  private readonly lib: HfLibTokenizer;

  constructor(tokenizerJson: Record<string, unknown>, config: TokenizerConfig) {
    this.lib = new HfLibTokenizer(tokenizerJson, {
      ...config.raw,
      // The library defaults this to true; it breaks round trips (" ." → "."), and
      // LLaMA-family configs set it false. An explicit value in the config wins.
      clean_up_tokenization_spaces: config.cleanUpTokenizationSpaces ?? false,
    });
    let maxId = -1;
    for (const id of this.lib.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const idOf = (t: string | undefined): number | null => (t === undefined ? null : (this.lib.token_to_id(t) ?? null));
    const leading = templateLeadingToken(tokenizerJson);
    this.bosId = idOf(config.bosToken) ?? idOf(leading) ?? idOf('<s>');
    this.eosId = idOf(config.eosToken) ?? idOf('</s>');
    // HF: add_bos_token from the config rules (LlamaTokenizerFast rebuilds its
    // post-processor from it); else what the file's post-processor does; else LLaMA's default.
    this.addBosByDefault =
      config.addBosToken ??
      (leading !== undefined && idOf(leading) === this.bosId && this.bosId !== null
        ? true
        : /llama/i.test(config.tokenizerClass ?? '') && this.bosId !== null);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    // Special tokens of the post-processor are left out: BOS is added here, per addBos.
    const { ids } = this.lib.encode(text, { add_special_tokens: false });
    for (const id of ids) {
      if (typeof id !== 'number') throw new Error(`tokenizer.json: cannot encode ${JSON.stringify(text)} (no <unk> token)`);
    }
    if ((opts.addBos ?? this.addBosByDefault) && this.bosId !== null) return [this.bosId, ...ids];
    return ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const known = ids.filter((id) => Number.isInteger(id) && this.lib.id_to_token(id) !== undefined);
    // The library throws on an empty list.
    if (known.length === 0) return '';
    return this.lib.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  idToPiece(id: number): string {
    const piece = Number.isInteger(id) ? this.lib.id_to_token(id) : undefined;
    if (piece === undefined) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    return piece;
  }

  tokenId(piece: string): number | undefined {
    return this.lib.token_to_id(piece);
  }
}

/** Loads `dir/tokenizer.json` with `dir/tokenizer_config.json` (if any). */
export async function loadHfTokenizer(dir: string): Promise<HfTokenizer> {
  const json: unknown = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8'));
  if (!isRecord(json)) throw new Error(`${join(dir, 'tokenizer.json')}: expected a JSON object`);
  return new HfTokenizer(json, readTokenizerConfig(dir));
}
