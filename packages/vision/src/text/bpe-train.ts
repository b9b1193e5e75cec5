/**
 * Learning a small CLIP-style tokenizer from captions (a micro CLIP cannot afford OpenAI's
 * 49408-row embedding table) and writing it as a real CLIP checkpoint ships it. The same
 * algorithm as scripts/reference/clip_text.py's train_bpe, so both give identical files.
 */
import { bytesToUnicode } from './bpe.js';
import { CLIP_BOS, CLIP_EOS, CLIP_NORMALIZER, CLIP_PRE_TOKENIZER, clipWords } from './tokenizer.js';

export interface TrainBpeOptions {
  /** At most this many merges (the vocabulary is 512 + merges + 2). */
  numMerges: number;
  /** Stop when the best pair occurs fewer times (default 2). */
  minFrequency?: number;
}

const SEP = '\u0000';

/**
 * BPE merges learned on texts cut as CLIP cuts them; word ends carry `</w>`. Each step merges
 * the most frequent adjacent pair (ties: the smallest pair, comparing left then right symbol),
 * so the result is deterministic.
 */
export function trainClipBpe(texts: Iterable<string>, opts: TrainBpeOptions): Array<[string, string]> {
  const minFrequency = opts.minFrequency ?? 2;
  const wordCounts = new Map<string, number>();
  for (const t of texts) for (const w of clipWords(t)) wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
  let corpus: Array<{ symbols: string[]; count: number }> = [...wordCounts].map(([w, count]) => {
    const chars = [...w];
    return { symbols: [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`], count };
  });
  const merges: Array<[string, string]> = [];
  while (merges.length < opts.numMerges) {
    const counts = new Map<string, number>();
    for (const { symbols, count } of corpus) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const k = symbols[i] + SEP + symbols[i + 1];
        counts.set(k, (counts.get(k) ?? 0) + count);
      }
    }
    let best: [string, string] | null = null, bestCount = 0;
    for (const [k, c] of counts) {
      const [a, b] = k.split(SEP) as [string, string];
      if (c > bestCount || (c === bestCount && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (!best || bestCount < minFrequency) break;
    merges.push(best);
    const [a, b] = best;
    corpus = corpus.map(({ symbols, count }) => {
      const out: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === a && symbols[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(symbols[i]);
      }
      return { symbols: out, count };
    });
  }
  return merges;
}

/**
 * OpenAI CLIP's vocabulary order: the 256 byte characters (printable bytes first, as
 * bytes_to_unicode's dict lists them, which is code-point order: "!" is 0), the same with
 * `</w>`, one piece per merge, BOS, EOS.
 */
export function clipVocab(merges: ReadonlyArray<readonly [string, string]>): Map<string, number> {
  const chars = [...bytesToUnicode()].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  const pieces = [...chars, ...chars.map((c) => `${c}</w>`), ...merges.map(([a, b]) => a + b), CLIP_BOS, CLIP_EOS];
  const vocab = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (vocab.has(p)) throw new Error(`clipVocab: piece ${JSON.stringify(p)} appears twice (a merge list with duplicates?)`);
    vocab.set(p, i);
  });
  return vocab;
}

/**
 * `tokenizer.json` and `tokenizer_config.json` contents laid out as transformers'
 * CLIPConverter / CLIPTokenizer write them, for a vocabulary built by {@link clipVocab}.
 */
export function clipTokenizerFiles(
  merges: ReadonlyArray<readonly [string, string]>, opts: { maxLength?: number } = {},
): { tokenizerJson: Record<string, unknown>; tokenizerConfig: Record<string, unknown> } {
  const vocab = clipVocab(merges);
  const special = (content: string) => ({
    id: vocab.get(content)!, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true,
  });
  const token = (content: string) => ({ __type: 'AddedToken', content, lstrip: false, normalized: true, rstrip: false, single_word: false });
  return {
    tokenizerJson: {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [special(CLIP_BOS), special(CLIP_EOS)],
      normalizer: CLIP_NORMALIZER,
      pre_tokenizer: CLIP_PRE_TOKENIZER,
      post_processor: {
        type: 'RobertaProcessing', sep: [CLIP_EOS, vocab.get(CLIP_EOS)], cls: [CLIP_BOS, vocab.get(CLIP_BOS)],
        trim_offsets: false, add_prefix_space: false,
      },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE', dropout: null, unk_token: CLIP_EOS, continuing_subword_prefix: '', end_of_word_suffix: '</w>',
        fuse_unk: false, byte_fallback: false, vocab: Object.fromEntries(vocab), merges: merges.map(([a, b]) => `${a} ${b}`),
      },
    },
    tokenizerConfig: {
      add_prefix_space: false, bos_token: token(CLIP_BOS), do_lower_case: true, eos_token: token(CLIP_EOS), errors: 'replace',
      model_max_length: opts.maxLength ?? 77, pad_token: CLIP_EOS, tokenizer_class: 'CLIPTokenizer', unk_token: token(CLIP_EOS),
    },
  };
}
