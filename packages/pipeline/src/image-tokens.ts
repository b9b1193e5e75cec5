import type { Tokenizer } from '@mobillama/decoder';
import { IMAGE_MARKER, IMAGE_TOKEN_ID } from './conversation.js';

/**
 * Tokenizes a prompt containing `<image>` markers as LLaVA's tokenizer_image_token does:
 * each text chunk is tokenized on its own (so each keeps SentencePiece's dummy prefix), the
 * first chunk keeps BOS, later chunks lose theirs, and each marker becomes IMAGE_TOKEN_ID.
 */
export function tokenizeWithImage(tokenizer: Tokenizer, prompt: string, opts: { addBos?: boolean } = {}): number[] {
  const addBos = opts.addBos ?? tokenizer.addBosByDefault;
  const chunks = prompt.split(IMAGE_MARKER);
  const ids: number[] = [];
  chunks.forEach((chunk, i) => {
    if (i > 0) ids.push(IMAGE_TOKEN_ID);
    if (chunk.length === 0) {
      if (i === 0 && addBos && tokenizer.bosId !== null) ids.push(tokenizer.bosId);
      return;
    }
    ids.push(...tokenizer.encode(chunk, { addBos: i === 0 && addBos }));
  });
  return ids;
}
