/**
 * Ask about an image from code with the MobiLlamaV pipeline.
 *
 *   pnpm tsx examples/ask.ts [IMAGE] [QUESTION]
 *
 * Uses the shipped micro model (models/mobillama-v-micro); set MOBILLAMA_MODEL to a LLaVA or
 * llava-hf folder to ask another model.
 */
import { fileURLToPath } from 'node:url';
import { MobiLlamaV } from '@mobillama/pipeline';

const model = process.env.MOBILLAMA_MODEL ?? fileURLToPath(new URL('../models/mobillama-v-micro', import.meta.url));
const image = process.argv[2] ?? fileURLToPath(new URL('images/red-circle.png', import.meta.url));
const question = process.argv[3] ?? 'What color is the circle?';

const m = await MobiLlamaV.load({ model, threads: 2 });
try {
  // One answer, greedy.
  const { text } = await m.answer({ image, question });
  console.log(`Q: ${question}\nA: ${text}`);
  // The same, streamed piece by piece.
  process.stdout.write('Q: Describe the image briefly.\nA:');
  for await (const piece of m.stream({ image, question: 'Describe the image briefly.' })) process.stdout.write(piece.text);
  process.stdout.write('\n');
} finally {
  await m.dispose();
}
