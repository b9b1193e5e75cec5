import type { EncodeOptions, Tokenizer } from '@mobillama/decoder';

/**
 * The tokenizer with a bounded memo of `encode`: LLaVA's masking tokenizes every round's whole
 * prompt three times (prompt, round, instruction), and the system prompt and a dataset's
 * questions repeat, so most BPE work is done again and again. On the 2-core machines training
 * shares the cores with ORT, where that work (~0.18 s a step for 16 six-question conversations,
 * profiled) slows every step. Results are copies: callers own their arrays.
 */
export function withEncodeCache(tokenizer: Tokenizer, maxEntries = 50_000): Tokenizer {
  const memo = new Map<string, readonly number[]>();
  const encode = (text: string, opts?: EncodeOptions): number[] => {
    const key = `${opts?.addBos === undefined ? '-' : opts.addBos ? '1' : '0'}${text}`;
    let ids = memo.get(key);
    if (!ids) {
      ids = tokenizer.encode(text, opts);
      // Oldest first out (a Map iterates in insertion order): bounded for any dataset size.
      if (memo.size >= maxEntries) memo.delete(memo.keys().next().value as string);
      memo.set(key, ids);
    }
    return ids.slice();
  };
  // Everything else is the tokenizer's own (methods bound to it: classes may keep private state).
  return new Proxy(tokenizer, {
    get: (t, p) => {
      if (p === 'encode') return encode;
      const v: unknown = Reflect.get(t, p, t);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
}
