/** Reads the parts of HF `tokenizer_config.json` (and `added_tokens.json`) that tokenization needs. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface AddedTokenSpec {
  readonly id: number;
  readonly content: string;
  readonly special: boolean;
}

export interface TokenizerConfig {
  /** add_bos_token, when the file says. */
  readonly addBosToken?: boolean;
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly unkToken?: string;
  readonly padToken?: string;
  readonly cleanUpTokenizationSpaces?: boolean;
  /** tokenizer_class, e.g. "LlamaTokenizer". */
  readonly tokenizerClass?: string;
  /** From `added_tokens_decoder` and `added_tokens.json`. */
  readonly addedTokens: readonly AddedTokenSpec[];
  /** The parsed file, for the HF library, which reads some keys itself. */
  readonly raw: Readonly<Record<string, unknown>>;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Token fields are a string or an AddedToken object `{ content, … }`. */
function tokenContent(x: unknown): string | undefined {
  if (typeof x === 'string') return x;
  if (isRecord(x) && typeof x.content === 'string') return x.content;
  return undefined;
}

function readJson(path: string): unknown {
  return JSON.parse(readFileSync(path, 'utf8')) as unknown;
}

export function readTokenizerConfig(dir: string): TokenizerConfig {
  const path = join(dir, 'tokenizer_config.json');
  const raw = existsSync(path) ? readJson(path) : {};
  if (!isRecord(raw)) throw new Error(`${path}: expected a JSON object`);

  const added = new Map<number, AddedTokenSpec>();
  const decoderMap = raw.added_tokens_decoder;
  if (isRecord(decoderMap)) {
    for (const [key, value] of Object.entries(decoderMap)) {
      const id = Number(key);
      const content = tokenContent(value);
      if (!Number.isInteger(id) || content === undefined) continue;
      const special = isRecord(value) && value.special === true;
      added.set(id, { id, content, special });
    }
  }
  // Slow tokenizers keep extra tokens in added_tokens.json: { "<pad>": 32000 }.
  const addedPath = join(dir, 'added_tokens.json');
  if (existsSync(addedPath)) {
    const extra = readJson(addedPath);
    if (isRecord(extra)) {
      for (const [content, id] of Object.entries(extra)) {
        if (typeof id === 'number' && !added.has(id)) added.set(id, { id, content, special: false });
      }
    }
  }
  // additional_special_tokens marks added tokens as special.
  const additional = Array.isArray(raw.additional_special_tokens)
    ? raw.additional_special_tokens.map(tokenContent).filter((t): t is string => t !== undefined)
    : [];
  for (const [id, spec] of added) {
    if (!spec.special && additional.includes(spec.content)) added.set(id, { ...spec, special: true });
  }

  return {
    addBosToken: typeof raw.add_bos_token === 'boolean' ? raw.add_bos_token : undefined,
    bosToken: tokenContent(raw.bos_token),
    eosToken: tokenContent(raw.eos_token),
    unkToken: tokenContent(raw.unk_token),
    padToken: tokenContent(raw.pad_token),
    cleanUpTokenizationSpaces:
      typeof raw.clean_up_tokenization_spaces === 'boolean' ? raw.clean_up_tokenization_spaces : undefined,
    tokenizerClass: typeof raw.tokenizer_class === 'string' ? raw.tokenizer_class : undefined,
    addedTokens: [...added.values()].sort((a, b) => a.id - b.id),
    raw,
  };
}
