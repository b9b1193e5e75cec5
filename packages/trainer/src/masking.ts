import type { Tokenizer } from '@mobillama/decoder';
import { IMAGE_MARKER, IMAGE_TOKEN_ID, tokenizeWithImage } from '@mobillama/pipeline';
import type { LlavaEntry, LlavaTurn } from './dataset.js';
import { DataError } from './errors.js';

/** LLaVA's IGNORE_INDEX: labels with this value carry no loss. */
export const IGNORE_INDEX = -100;

/** The training templates LLaVA uses: `plain` for stage 1, `vicuna_v1` (conv_vicuna_v1) for stage 2. */
export type TrainTemplate = 'plain' | 'vicuna_v1';

/** conv_vicuna_v1.system in LLaVA's conversation.py (the same text the pipeline's vicuna_v1 template uses). */
export const VICUNA_V1_SYSTEM =
  "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
const V1_ROLES = { human: 'USER', gpt: 'ASSISTANT' } as const;
const V1_SEP = ' ';
const V1_SEP2 = '</s>';

/** A sample ready for batching: token ids (IMAGE_TOKEN_ID marks the image) and aligned labels. */
export interface TokenizedSample {
  readonly id: string;
  readonly ids: readonly number[];
  /** Same length as `ids`; IGNORE_INDEX where there is no loss (LLaVA's targets, not yet shifted). */
  readonly labels: readonly number[];
  /** The image path from the entry when the prompt has an image marker; null for text-only samples. */
  readonly image: string | null;
  /**
   * Independent turns only (see preprocessIndependentTurns): per id, 0 for the shared prefix,
   * k for the k-th turn. Absent: one causal sequence.
   */
  readonly segments?: readonly number[];
}

export interface MaskingOptions {
  /** LLaVA's tokenizer.model_max_length: the tokenization-mismatch check is skipped at or past it, as in LLaVA. */
  readonly modelMaxLength: number;
}

/**
 * LLaVA's preprocess_multimodal (mm_use_im_start_end false): every turn holding `<image>`
 * loses its markers and gets one `<image>\n` in front; applied only to samples with an image.
 */
export function moveImageToFront(turns: readonly LlavaTurn[]): LlavaTurn[] {
  return turns.map((t) => {
    if (!t.value.includes(IMAGE_MARKER)) return t;
    const rest = t.value.split(IMAGE_MARKER).join('').trim();
    return { from: t.from, value: `${IMAGE_MARKER}\n${rest}`.trim() };
  });
}

/**
 * LLaVA's preprocess_plain (stage 1): the prompt is just `<image>`, the text is
 * `<image>` + caption + "\n", and the loss covers everything after the image marker.
 */
export function preprocessPlain(entry: LlavaEntry, tokenizer: Tokenizer): TokenizedSample {
  const where = `sample ${entry.id}`;
  if (entry.image === undefined) throw new DataError(`${where}: the plain template (stage 1) needs an image`);
  const turns = moveImageToFront(entry.conversations);
  if (turns.length !== 2) throw new DataError(`${where}: the plain template takes exactly 2 turns (image, caption), got ${turns.length}`);
  if (!turns[0].value.includes(IMAGE_MARKER)) throw new DataError(`${where}: the first turn has no ${IMAGE_MARKER}`);
  const text = IMAGE_MARKER + turns[1].value + '\n';
  const ids = tokenizeWithImage(tokenizer, text);
  const promptLen = tokenizeWithImage(tokenizer, IMAGE_MARKER).length;
  const labels = ids.map((id, i) => (i < promptLen ? IGNORE_INDEX : id));
  return { id: entry.id, ids, labels, image: entry.image };
}

/** LLaVA's conv_vicuna_v1.get_prompt() (SeparatorStyle.TWO) for the turns of one sample. */
export function vicunaV1Prompt(turns: readonly LlavaTurn[], id: string): string {
  let list = turns;
  if (list.length > 0 && roleOf(list[0], id) !== V1_ROLES.human) list = list.slice(1); // LLaVA skips a leading gpt turn
  let text = VICUNA_V1_SYSTEM + V1_SEP;
  list.forEach((t, j) => {
    const role = roleOf(t, id);
    const expected = j % 2 === 0 ? V1_ROLES.human : V1_ROLES.gpt;
    if (role !== expected) throw new DataError(`sample ${id}: turn ${j} is from ${t.from}; turns must alternate human, gpt`);
    text += t.value ? `${role}: ${t.value}${j % 2 === 0 ? V1_SEP : V1_SEP2}` : `${role}:`;
  });
  return text;
}

function roleOf(t: LlavaTurn, id: string): string {
  const r = V1_ROLES[t.from as keyof typeof V1_ROLES];
  if (!r) throw new DataError(`sample ${id}: unknown speaker ${JSON.stringify(t.from)} (human or gpt)`);
  return r;
}

/**
 * LLaVA's preprocess_v1: render with conv_vicuna_v1, tokenize (tokenizer_image_token when the
 * sample has an image), then mask by round lengths exactly as LLaVA does: BOS and every
 * "system + USER: … ASSISTANT: " part get IGNORE_INDEX, each reply and its `</s>` keep their
 * ids. LLaVA prints a warning and silently drops a sample whose round lengths do not add up
 * to its length; here that is a DataError naming the sample, so nothing is trained on a
 * misaligned mask.
 */
export function preprocessVicunaV1(entry: LlavaEntry, tokenizer: Tokenizer, opts: MaskingOptions): TokenizedSample {
  const hasImage = entry.image !== undefined;
  const turns = hasImage ? moveImageToFront(entry.conversations) : entry.conversations;
  const prompt = vicunaV1Prompt(turns, entry.id);
  // LLaVA: tokenizer_image_token with an image, the plain tokenizer without (so "<image>" in a
  // text-only sample is just text).
  const tok = (s: string) => (hasImage ? tokenizeWithImage(tokenizer, s) : tokenizer.encode(s, { addBos: tokenizer.addBosByDefault }));
  const ids = tok(prompt);
  const labels = ids.slice();
  const padId = tokenizer.tokenId('<unk>') ?? 0; // LLaVA trains vicuna with pad = unk
  const totalLen = ids.reduce((n, id) => n + (id !== padId ? 1 : 0), 0);
  const sep = `${V1_SEP}${V1_ROLES.gpt}: `;
  let cur = 1;
  labels.fill(IGNORE_INDEX, 0, 1);
  for (const rou of prompt.split(V1_SEP2)) {
    if (rou === '') break;
    const parts = rou.split(sep);
    if (parts.length !== 2) break;
    const roundLen = tok(rou).length;
    const instructionLen = tok(parts[0] + sep).length - 2;
    labels.fill(IGNORE_INDEX, cur, Math.min(labels.length, cur + instructionLen));
    cur += roundLen;
  }
  labels.fill(IGNORE_INDEX, Math.min(cur, labels.length));
  if (cur < opts.modelMaxLength && cur !== totalLen) {
    throw new DataError(`sample ${entry.id}: tokenization mismatch: the rounds add up to ${cur} tokens, the conversation has ${totalLen} (LLaVA would silently drop this sample)`);
  }
  const image = hasImage && ids.includes(IMAGE_TOKEN_ID) ? entry.image! : null;
  return { id: entry.id, ids, labels, image };
}

/**
 * Independent turns (vicuna_v1): each human/gpt round of a conversation becomes the
 * single-round sample it would be if asked alone about the image (the image marker in its
 * question), and the rounds are packed after their common prefix (BOS, system prompt,
 * "USER: ", the image). `segments` says which round each id belongs to; the graph lets a
 * round attend to the prefix and to itself only, and restarts its positions where the prefix
 * ends. Every round therefore gets exactly the loss (and gradient) of its own single-round
 * sample, while the prefix and the image are computed once per conversation instead of once
 * per question. For data whose turns are separate questions about one image (VQA-style);
 * a conversation whose later turns build on earlier ones needs the plain causal form.
 */
export function preprocessIndependentTurns(entry: LlavaEntry, tokenizer: Tokenizer, opts: MaskingOptions): TokenizedSample {
  const hasImage = entry.image !== undefined;
  let turns = hasImage ? moveImageToFront(entry.conversations) : entry.conversations;
  if (turns.length > 0 && turns[0].from === 'gpt') turns = turns.slice(1); // as LLaVA, a leading gpt turn is skipped
  if (turns.length < 2 || turns.length % 2 !== 0) throw new DataError(`sample ${entry.id}: independent turns need human, gpt pairs; got ${turns.length} turns`);
  const rounds: TokenizedSample[] = [];
  for (let j = 0; j < turns.length; j += 2) {
    const question = turns[j].value.split(IMAGE_MARKER).join('').trim();
    const human = { from: turns[j].from, value: hasImage ? `${IMAGE_MARKER}\n${question}` : turns[j].value };
    rounds.push(preprocessVicunaV1({ ...entry, id: `${entry.id} round ${j / 2 + 1}`, conversations: [human, turns[j + 1]] }, tokenizer, opts));
  }
  // The shared prefix: the ids all rounds have in common before any of them is supervised.
  let prefix = Math.min(...rounds.map((r) => firstSupervised(r.labels)));
  for (const r of rounds) {
    let k = 0;
    while (k < prefix && r.ids[k] === rounds[0].ids[k]) k++;
    prefix = k;
  }
  const ids = rounds[0].ids.slice(0, prefix), labels = rounds[0].labels.slice(0, prefix);
  const segments: number[] = new Array<number>(prefix).fill(0);
  rounds.forEach((r, k) => {
    if (r.ids.indexOf(IMAGE_TOKEN_ID, prefix) >= 0) throw new DataError(`sample ${entry.id}: the image is not in the prefix the turns share`);
    for (let i = prefix; i < r.ids.length; i++) {
      ids.push(r.ids[i]);
      labels.push(r.labels[i]);
      segments.push(k + 1);
    }
  });
  return { id: entry.id, ids, labels, image: rounds[0].image, segments };
}

function firstSupervised(labels: readonly number[]): number {
  const i = labels.findIndex((l) => l !== IGNORE_INDEX);
  return i < 0 ? labels.length : i;
}

/** The template's preprocessing for one entry. */
export function tokenizeSample(entry: LlavaEntry, tokenizer: Tokenizer, template: TrainTemplate, opts: MaskingOptions & { independentTurns?: boolean }): TokenizedSample {
  if (opts.independentTurns && template !== 'vicuna_v1') throw new DataError(`independent turns need the vicuna_v1 template, not ${template}`);
  const s = template === 'plain' ? preprocessPlain(entry, tokenizer)
    : opts.independentTurns ? preprocessIndependentTurns(entry, tokenizer, opts) : preprocessVicunaV1(entry, tokenizer, opts);
  if (s.ids.filter((i) => i === IMAGE_TOKEN_ID).length > 1) throw new DataError(`sample ${entry.id}: more than one image marker`);
  return s;
}
