/**
 * Serve a MobiLlama-V over the OpenAI chat-completions API and call it with the official
 * `openai` client: the server runs in this process (runServer from @mobillama/server, on a
 * free port), the image goes as a data URL, the answer comes back whole and streamed.
 *
 *   pnpm tsx examples/openai-client.ts [IMAGE] [QUESTION]
 *
 * Against a server started with `mobillama-v serve`, only the client half is needed (baseURL
 * http://127.0.0.1:8080/v1).
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { runServer } from '@mobillama/server';

const model = process.env.MOBILLAMA_MODEL ?? fileURLToPath(new URL('../models/mobillama-v-micro', import.meta.url));
const image = process.argv[2] ?? fileURLToPath(new URL('images/red-circle.png', import.meta.url));
const question = process.argv[3] ?? 'What color is the circle?';

const server = await runServer({ model: { model, threads: 2 }, port: 0, log: () => {} });
try {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none' });
  const url = `data:image/png;base64,${(await readFile(image)).toString('base64')}`;
  const messages: OpenAI.ChatCompletionMessageParam[] = [{
    role: 'user',
    content: [{ type: 'text', text: question }, { type: 'image_url', image_url: { url } }],
  }];
  const reply = await client.chat.completions.create({ model: 'mobillama-v', messages, max_tokens: 32 });
  console.log(`Q: ${question}\nA: ${reply.choices[0].message.content}`);
  console.log(`usage: ${JSON.stringify(reply.usage)}`);

  process.stdout.write('streamed: ');
  const stream = await client.chat.completions.create({ model: 'mobillama-v', messages, max_tokens: 32, stream: true });
  for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? '');
  process.stdout.write('\n');
} finally {
  await server.close();
}
