import { ConfigError } from '@mobillama/core';

// 2-D rotary positions (DecoderConfig.rope2d). Every token has two position ids: even rotary
// frequency pairs turn by the first, odd ones by the second. Text tokens get the same id in
// both, which is LLaMA's RoPE exactly. A square grid of image tokens (row by row in the
// sequence, as LLaVA splices them) is numbered row by row in the first id and column by
// column in the second: both are the same block of ids, so the text after the image goes on
// from start + rows·cols in both, and a token's ids tell its row and its column. (With one
// row-major id the column is only its remainder: the micro decoder learned left/right
// comparisons with these ids and not with LLaVA's; models/README, "2-D rotary positions".)

/** The side of a square grid of `tokens` image tokens; refuses other counts. */
export function gridSide(tokens: number): number {
  const side = Math.round(Math.sqrt(tokens));
  if (side * side !== tokens) throw new ConfigError(`2-D rotary positions need a square grid of image tokens, got ${tokens}`);
  return side;
}

/** The second (column-by-column) id offset of the grid token at row-major offset j. */
export function columnMajorOffset(j: number, side: number): number {
  return (j % side) * side + Math.floor(j / side);
}

/**
 * The second position ids of a sequence of `seq` tokens with a square grid of `gridTokens`
 * image tokens starting at `gridStart`: 0, 1, 2, … with the grid numbered column by column.
 * (The first ids are 0, 1, 2, … throughout.)
 */
export function gridSecondPositionIds(seq: number, gridStart: number, gridTokens: number): number[] {
  const side = gridSide(gridTokens);
  const second = Array.from({ length: seq }, (_, i) => i);
  for (let j = 0; j < gridTokens && gridStart + j < seq; j++) second[gridStart + j] = gridStart + columnMajorOffset(j, side);
  return second;
}
