/**
 * CLIP's tokenizer from a checkpoint folder: `tokenizer.json` as transformers' CLIPConverter
 * writes it (NFC + whitespace collapse + lowercase, the CLIP split regex, byte-level BPE with
 * `</w>` word ends, `<|startoftext|> … <|endoftext|>`), or the slow tokenizer's
 * `vocab.json` + `merges.txt`, interpreted the same way. Self-contained (no tokenizer
 * library), so the vision package does not depend on the decoder's.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BytePairEncoder, fromByteLevel, toByteLevel } from './bpe.js';

/** A tokenizer file that cannot be used: one line, exit code 2 in the CLI. */
export class ClipTokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

type Json = Record<string, unknown>;
const isRecord = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x);

/** The CLIP split regex (transformers' CLIPConverter) and GPT-2's, used by ByteLevel with use_regex. */
const CLIP_SPLIT = String.raw`'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`;
const GPT2_SPLIT = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;

export const CLIP_BOS = '<|startoftext|>';
export const CLIP_EOS = '<|endoftext|>';

/** The normalizer transformers' CLIPConverter writes into tokenizer.json. */
export const CLIP_NORMALIZER: Readonly<Json> = {
  type: 'Sequence',
  normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: String.raw`\s+` }, content: ' ' }, { type: 'Lowercase' }],
};

/** The pre-tokenizer transformers' CLIPConverter writes into tokenizer.json. */
export const CLIP_PRE_TOKENIZER: Readonly<Json> = {
  type: 'Sequence',
  pretokenizers: [
    { type: 'Split', pattern: { Regex: String.raw`<\|startoftext\|>|<\|endoftext\|>|` + CLIP_SPLIT }, behavior: 'Removed', invert: true },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  ],
};

let clipPipeline: { normalize: Normalize; preTokenize: PreTokenize } | undefined;

/** A text's byte-level words as CLIP's pipeline cuts them (normalised, split, byte-mapped), before BPE. */
export function clipWords(text: string): string[] {
  clipPipeline ??= { normalize: normalizerOf(CLIP_NORMALIZER, 'CLIP'), preTokenize: preTokenizerOf(CLIP_PRE_TOKENIZER, 'CLIP') };
  return clipPipeline.preTokenize([clipPipeline.normalize(text)]);
}

function regexOf(pattern: unknown, where: string): RegExp {
  if (isRecord(pattern) && typeof pattern.Regex === 'string') {
    try {
      return new RegExp(pattern.Regex, 'gu');
    } catch (e) {
      throw new ClipTokenizerError(`${where}: regex ${JSON.stringify(pattern.Regex)} is not usable here (${(e as Error).message})`);
    }
  }
  if (isRecord(pattern) && typeof pattern.String === 'string') return new RegExp(pattern.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
  throw new ClipTokenizerError(`${where}: pattern must be {"Regex": …} or {"String": …}`);
}

type Normalize = (s: string) => string;
type PreTokenize = (pieces: string[]) => string[];

function normalizerOf(n: unknown, where: string): Normalize {
  if (n === null || n === undefined) return (s) => s;
  if (!isRecord(n)) throw new ClipTokenizerError(`${where}: normalizer must be an object`);
  switch (n.type) {
    case 'Sequence': {
      const steps = (Array.isArray(n.normalizers) ? n.normalizers : []).map((x) => normalizerOf(x, where));
      return (s) => steps.reduce((acc, f) => f(acc), s);
    }
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': {
      const form = n.type;
      return (s) => s.normalize(form);
    }
    case 'Lowercase': return (s) => s.toLowerCase();
    case 'Replace': {
      const re = regexOf(n.pattern, `${where} Replace`);
      const content = typeof n.content === 'string' ? n.content : '';
      return (s) => s.replace(re, () => content);
    }
    case 'Strip': {
      const left = n.strip_left !== false, right = n.strip_right !== false;
      return (s) => {
        const l = left ? s.trimStart() : s;
        return right ? l.trimEnd() : l;
      };
    }
    default: throw new ClipTokenizerError(`${where}: normalizer ${String(n.type)} is not supported`);
  }
}

/** Split one piece into (text, matched) segments by a regex. */
function segments(piece: string, re: RegExp): Array<[string, boolean]> {
  const out: Array<[string, boolean]> = [];
  let last = 0;
  for (const m of piece.matchAll(re)) {
    if (m[0] === '') continue;
    if (m.index > last) out.push([piece.slice(last, m.index), false]);
    out.push([m[0], true]);
    last = m.index + m[0].length;
  }
  if (last < piece.length) out.push([piece.slice(last), false]);
  return out;
}

function preTokenizerOf(p: unknown, where: string): PreTokenize {
  if (p === null || p === undefined) return (pieces) => pieces;
  if (!isRecord(p)) throw new ClipTokenizerError(`${where}: pre_tokenizer must be an object`);
  switch (p.type) {
    case 'Sequence': {
      const steps = (Array.isArray(p.pretokenizers) ? p.pretokenizers : []).map((x) => preTokenizerOf(x, where));
      return (pieces) => steps.reduce((acc, f) => f(acc), pieces);
    }
    case 'Split': {
      const re = regexOf(p.pattern, `${where} Split`);
      const invert = p.invert === true;
      const behavior = String(p.behavior ?? 'Isolated');
      if (behavior !== 'Removed' && behavior !== 'Isolated') throw new ClipTokenizerError(`${where}: Split behavior ${behavior} is not supported`);
      // HF: the pattern's matches are the delimiters; invert makes the matches the kept pieces.
      return (pieces) => pieces.flatMap((piece) => segments(piece, re)
        .filter(([, matched]) => behavior === 'Isolated' || matched === invert)
        .map(([s]) => s));
    }
    case 'WhitespaceSplit': return (pieces) => pieces.flatMap((piece) => piece.split(/\s+/u).filter((s) => s !== ''));
    case 'ByteLevel': {
      const prefix = p.add_prefix_space === true;
      const re = p.use_regex === false ? null : new RegExp(GPT2_SPLIT, 'gu');
      return (pieces) => pieces.flatMap((piece) => {
        const s = prefix && !piece.startsWith(' ') ? ` ${piece}` : piece;
        return (re ? segments(s, re).map(([t]) => t) : [s]).map(toByteLevel);
      });
    }
    default: throw new ClipTokenizerError(`${where}: pre_tokenizer ${String(p.type)} is not supported`);
  }
}

/** The [BOS, EOS] tokens a post-processor wraps one sequence in. */
function specialsOf(pp: unknown): { bos?: string; eos?: string } {
  if (!isRecord(pp)) return {};
  if ((pp.type === 'RobertaProcessing' || pp.type === 'BertProcessing') && Array.isArray(pp.cls) && Array.isArray(pp.sep)) {
    return { bos: String(pp.cls[0]), eos: String(pp.sep[0]) };
  }
  if (pp.type === 'TemplateProcessing' && Array.isArray(pp.single)) {
    const ids = pp.single.map((x: unknown) => (isRecord(x) && isRecord(x.SpecialToken) ? String(x.SpecialToken.id) : null));
    return { bos: ids[0] ?? undefined, eos: ids.length > 1 ? ids[ids.length - 1] ?? undefined : undefined };
  }
  return {};
}

function tokenContent(x: unknown): string | undefined {
  if (typeof x === 'string') return x;
  if (isRecord(x) && typeof x.content === 'string') return x.content;
  return undefined;
}

/** A batch of token rows, right-padded, as graph inputs want them. */
export interface ClipTokenBatch {
  /** int64 [batch, length], row-major. */
  readonly ids: BigInt64Array;
  /** int64 [batch, length]: 1 = token, 0 = pad. */
  readonly attentionMask: BigInt64Array;
  readonly batch: number;
  readonly length: number;
  /** Tokens per row (BOS and EOS included), before padding. */
  readonly lengths: readonly number[];
}

export interface ClipTokenizerOptions {
  /** Longest row, BOS and EOS included (default: tokenizer_config's model_max_length, else 77). */
  maxLength?: number;
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly maxLength: number;
  readonly vocabSize: number;
  private readonly idToToken: Map<number, string>;
  private readonly specialIds: Set<number>;
  private readonly added: Map<string, number>;
  private readonly addedRe: RegExp | null;
  private readonly suffix: string;

  private constructor(
    private readonly normalize: Normalize,
    private readonly preTokenize: PreTokenize,
    private readonly bpe: BytePairEncoder,
    vocab: ReadonlyMap<string, number>,
    added: ReadonlyArray<{ id: number; content: string; special: boolean }>,
    specials: { bos: string; eos: string; pad?: string },
    maxLength: number,
    suffix: string,
    where: string,
  ) {
    this.added = new Map(added.map((a) => [a.content, a.id]));
    this.idToToken = new Map([...vocab].map(([t, i]) => [i, t]));
    for (const a of added) this.idToToken.set(a.id, a.content);
    this.specialIds = new Set(added.filter((a) => a.special).map((a) => a.id));
    const idOf = (t: string) => this.added.get(t) ?? vocab.get(t);
    const bos = idOf(specials.bos), eos = idOf(specials.eos);
    if (bos === undefined || eos === undefined) throw new ClipTokenizerError(`${where}: no ids for ${specials.bos} / ${specials.eos}`);
    this.bosId = bos;
    this.eosId = eos;
    this.specialIds.add(bos).add(eos);
    this.padId = (specials.pad !== undefined ? idOf(specials.pad) : undefined) ?? eos;
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new ClipTokenizerError(`${where}: max length ${maxLength} leaves no room for BOS and EOS`);
    this.maxLength = maxLength;
    this.vocabSize = [...this.idToToken.keys()].reduce((m, id) => Math.max(m, id), -1) + 1;
    const escaped = [...this.added.keys()].sort((a, b) => b.length - a.length).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    this.addedRe = escaped.length ? new RegExp(escaped.join('|'), 'gu') : null;
    this.suffix = suffix;
  }

  /** From a parsed `tokenizer.json` (+ `tokenizer_config.json`). Only BPE models with the pieces CLIP uses are accepted. */
  static fromJson(tokenizerJson: unknown, tokenizerConfig: unknown = {}, opts: ClipTokenizerOptions = {}, where = 'tokenizer.json'): ClipTokenizer {
    if (!isRecord(tokenizerJson) || !isRecord(tokenizerJson.model)) throw new ClipTokenizerError(`${where}: no model section`);
    const model = tokenizerJson.model;
    if (model.type !== undefined && model.type !== 'BPE') throw new ClipTokenizerError(`${where}: model ${String(model.type)} is not BPE (not a CLIP tokenizer)`);
    if (!isRecord(model.vocab) || !Array.isArray(model.merges)) throw new ClipTokenizerError(`${where}: BPE model without vocab or merges`);
    const vocab = new Map<string, number>();
    for (const [t, id] of Object.entries(model.vocab)) if (typeof id === 'number') vocab.set(t, id);
    const merges = model.merges.map((m: unknown): [string, string] => {
      if (Array.isArray(m) && m.length === 2) return [String(m[0]), String(m[1])];
      const s = String(m);
      const i = s.indexOf(' ', 1);
      if (i < 0) throw new ClipTokenizerError(`${where}: bad merge ${JSON.stringify(s)}`);
      return [s.slice(0, i), s.slice(i + 1)];
    });
    const added = (Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [])
      .filter(isRecord)
      .filter((a) => typeof a.id === 'number' && typeof a.content === 'string')
      .map((a) => ({ id: a.id as number, content: a.content as string, special: a.special === true }));
    const unk = typeof model.unk_token === 'string' ? (vocab.get(model.unk_token) ?? added.find((a) => a.content === model.unk_token)?.id) : undefined;
    const suffix = typeof model.end_of_word_suffix === 'string' ? model.end_of_word_suffix : '';
    const bpe = new BytePairEncoder(vocab, merges, {
      endOfWordSuffix: suffix,
      continuingSubwordPrefix: typeof model.continuing_subword_prefix === 'string' ? model.continuing_subword_prefix : '',
      unkId: unk ?? null,
    });
    const cfg = isRecord(tokenizerConfig) ? tokenizerConfig : {};
    const fromPost = specialsOf(tokenizerJson.post_processor);
    const specials = {
      bos: fromPost.bos ?? tokenContent(cfg.bos_token) ?? CLIP_BOS,
      eos: fromPost.eos ?? tokenContent(cfg.eos_token) ?? CLIP_EOS,
      pad: tokenContent(cfg.pad_token),
    };
    return new ClipTokenizer(
      normalizerOf(tokenizerJson.normalizer, where), preTokenizerOf(tokenizerJson.pre_tokenizer, where), bpe, vocab, added,
      specials, opts.maxLength ?? configMaxLength(cfg), suffix, where,
    );
  }

  /**
   * The slow tokenizer's files (vocab.json, merges.txt with a `#version` line), run through
   * the same pipeline transformers' CLIPConverter builds from them.
   */
  static fromVocabMerges(vocabJson: unknown, mergesTxt: string, tokenizerConfig: unknown = {}, opts: ClipTokenizerOptions = {}): ClipTokenizer {
    if (!isRecord(vocabJson)) throw new ClipTokenizerError('vocab.json: expected an object');
    const merges = mergesTxt.split('\n').filter((l, i) => l.trim() !== '' && !(i === 0 && l.startsWith('#version')));
    const vocab = Object.entries(vocabJson).filter((e): e is [string, number] => typeof e[1] === 'number');
    const bos = vocab.find(([t]) => t === CLIP_BOS), eos = vocab.find(([t]) => t === CLIP_EOS);
    const special = (e: [string, number] | undefined) => (e ? [{ id: e[1], content: e[0], special: true }] : []);
    return ClipTokenizer.fromJson({
      added_tokens: [...special(bos), ...special(eos)],
      normalizer: CLIP_NORMALIZER,
      pre_tokenizer: CLIP_PRE_TOKENIZER,
      post_processor: { type: 'RobertaProcessing', cls: [CLIP_BOS, bos?.[1]], sep: [CLIP_EOS, eos?.[1]] },
      model: { type: 'BPE', unk_token: CLIP_EOS, continuing_subword_prefix: '', end_of_word_suffix: '</w>', vocab: vocabJson, merges },
    }, tokenizerConfig, opts, 'vocab.json');
  }

  /** A checkpoint folder's tokenizer: tokenizer.json, else vocab.json + merges.txt; tokenizer_config.json when present. */
  static async load(dir: string, opts: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    const read = async (name: string): Promise<string> => {
      try {
        return await readFile(join(dir, name), 'utf8');
      } catch (e) {
        throw new ClipTokenizerError(`cannot read ${join(dir, name)}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
    };
    const parse = (name: string, text: string): unknown => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new ClipTokenizerError(`${join(dir, name)}: not valid JSON`);
      }
    };
    const config = existsSync(join(dir, 'tokenizer_config.json')) ? parse('tokenizer_config.json', await read('tokenizer_config.json')) : {};
    if (existsSync(join(dir, 'tokenizer.json'))) {
      return ClipTokenizer.fromJson(parse('tokenizer.json', await read('tokenizer.json')), config, opts, join(dir, 'tokenizer.json'));
    }
    if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) {
      return ClipTokenizer.fromVocabMerges(parse('vocab.json', await read('vocab.json')), await read('merges.txt'), config, opts);
    }
    throw new ClipTokenizerError(`${dir}: no tokenizer.json (or vocab.json + merges.txt)`);
  }

  /** Token ids of a text without BOS/EOS; special tokens written in the text become their ids, as HF does. */
  encodeContent(text: string): number[] {
    const ids: number[] = [];
    const plain = (s: string) => {
      for (const word of this.preTokenize([this.normalize(s)])) ids.push(...this.bpe.encodeWord(word));
    };
    let last = 0;
    if (this.addedRe) {
      for (const m of text.matchAll(this.addedRe)) {
        plain(text.slice(last, m.index));
        ids.push(this.added.get(m[0])!);
        last = m.index + m[0].length;
      }
    }
    plain(text.slice(last));
    return ids;
  }

  /** `[BOS, …, EOS]`, the content truncated so the row fits `maxLength` (HF truncation=True keeps EOS). */
  encode(text: string, opts: { truncate?: boolean; maxLength?: number } = {}): number[] {
    const max = opts.maxLength ?? this.maxLength;
    const content = this.encodeContent(text);
    return [this.bosId, ...(opts.truncate ?? true ? content.slice(0, Math.max(0, max - 2)) : content), this.eosId];
  }

  /** Rows padded with the pad token (CLIP: EOS) to the longest row, or to `padTo`. */
  encodeBatch(texts: readonly string[], opts: { padTo?: number; maxLength?: number } = {}): ClipTokenBatch {
    const rows = texts.map((t) => this.encode(t, { maxLength: opts.maxLength }));
    const longest = rows.reduce((m, r) => Math.max(m, r.length), 0);
    const length = Math.max(longest, opts.padTo ?? 0);
    const ids = new BigInt64Array(rows.length * length).fill(BigInt(this.padId));
    const attentionMask = new BigInt64Array(rows.length * length);
    rows.forEach((r, i) => r.forEach((id, j) => {
      ids[i * length + j] = BigInt(id);
      attentionMask[i * length + j] = 1n;
    }));
    return { ids, attentionMask, batch: rows.length, length, lengths: rows.map((r) => r.length) };
  }

  /** Text of ids as CLIPTokenizerFast decodes: pieces joined, `</w>` → space, bytes decoded, trimmed. */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    let s = '';
    // Word ends become spaces; the byte table has no plain space, so decode between them.
    const flush = (chunk: string) => (this.suffix ? chunk.split(this.suffix) : [chunk]).map(fromByteLevel).join(' ');
    let pending = '';
    for (const id of ids) {
      const t = this.idToToken.get(id);
      if (t === undefined) continue;
      if (this.specialIds.has(id) || this.added.has(t)) {
        if (opts.skipSpecialTokens && this.specialIds.has(id)) continue;
        s += flush(pending) + t;
        pending = '';
      } else pending += t;
    }
    return (s + flush(pending)).trim();
  }

  /** The vocabulary piece of an id (e.g. "red</w>"). */
  idToPiece(id: number): string | undefined {
    return this.idToToken.get(id);
  }
}

function configMaxLength(cfg: Json): number {
  const m = cfg.model_max_length;
  // HF writes a huge sentinel (1e30) when no length is known.
  return typeof m === 'number' && Number.isInteger(m) && m >= 2 && m <= 1_000_000 ? m : 77;
}
