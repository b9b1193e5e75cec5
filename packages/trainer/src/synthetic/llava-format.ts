/**
 * LLaVA's data JSON (DESIGN.md §3): an array of `{id, image?, conversations}` whose turns
 * alternate human/gpt starting with the human, the image marked once by `<image>` in a
 * human turn. `type` on a question entry is our extension (LLaVA ignores unknown fields).
 */

export interface LlavaTurn {
  readonly from: 'human' | 'gpt';
  readonly value: string;
}

export interface LlavaEntry {
  readonly id: string;
  /** Relative to the image folder. */
  readonly image?: string;
  readonly conversations: readonly LlavaTurn[];
  readonly type?: string;
}

const IMAGE_MARKER = '<image>';

/** What is wrong with `data` as a LLaVA data file, as one message per problem (empty: valid). */
export function llavaFormatProblems(data: unknown): string[] {
  if (!Array.isArray(data)) return ['the top level is not an array'];
  const problems: string[] = [];
  const ids = new Set<string>();
  data.forEach((e: unknown, i) => {
    const at = `entry ${i}`;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) return void problems.push(`${at}: not an object`);
    const o = e as Record<string, unknown>;
    if (typeof o.id !== 'string' || o.id === '') problems.push(`${at}: id is not a non-empty string`);
    else if (ids.has(o.id)) problems.push(`${at}: duplicate id ${o.id}`);
    else ids.add(o.id);
    if (o.image !== undefined && typeof o.image !== 'string') problems.push(`${at}: image is not a string`);
    if (o.type !== undefined && typeof o.type !== 'string') problems.push(`${at}: type is not a string`);
    const conv = o.conversations;
    if (!Array.isArray(conv) || conv.length === 0 || conv.length % 2 !== 0) {
      return void problems.push(`${at}: conversations is not a non-empty list of human/gpt pairs`);
    }
    let markers = 0;
    conv.forEach((t: unknown, j) => {
      const turn = t as Record<string, unknown> | null;
      const from = j % 2 === 0 ? 'human' : 'gpt';
      if (typeof turn !== 'object' || turn === null || turn.from !== from || typeof turn.value !== 'string') {
        problems.push(`${at}: turn ${j} is not {"from": "${from}", "value": string}`);
        return;
      }
      const n = (turn.value as string).split(IMAGE_MARKER).length - 1;
      if (from === 'gpt' && n > 0) problems.push(`${at}: turn ${j}: <image> in a gpt turn`);
      markers += n;
    });
    const want = o.image === undefined ? 0 : 1;
    if (markers !== want) problems.push(`${at}: ${markers} <image> markers for ${want} image`);
  });
  return problems;
}

/**
 * Runs of consecutive entries about the same image, each run as one multi-turn conversation
 * (LLaVA-665k's layout, the form `train --independent-turns` packs): the first entry's id,
 * the image marker in the first question only, `type` dropped (a run mixes them). Entries
 * without an image stay as they are.
 */
export function conversationsPerImage(entries: readonly LlavaEntry[]): LlavaEntry[] {
  type Conversation = { id: string; image?: string; conversations: LlavaTurn[] };
  const out: Conversation[] = [];
  for (const e of entries) {
    const last: Conversation | undefined = out[out.length - 1];
    if (e.image !== undefined && last !== undefined && last.image === e.image) {
      last.conversations.push(...e.conversations.map((t) => (t.from === 'human' ? { from: t.from, value: t.value.split(IMAGE_MARKER).join('').trim() } : t)));
    } else {
      out.push({ id: e.id, ...(e.image === undefined ? {} : { image: e.image }), conversations: [...e.conversations] });
    }
  }
  return out;
}
