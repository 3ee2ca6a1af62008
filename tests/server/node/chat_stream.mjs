// A streaming chat completion through the official openai client, against the server at process.argv[2].
// Prints {"text", "finish_reason", "chunks"} as one JSON line: the assembled text is checked by the C++ test.
import OpenAI from "openai";

const [baseURL, apiKey, model, content] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 30_000 });

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content }],
  max_tokens: 24,
  temperature: 0,
  stream: true,
});
let text = "";
let finish_reason = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  const choice = chunk.choices[0];
  if (!choice) continue;
  text += choice.delta?.content ?? "";
  finish_reason = choice.finish_reason ?? finish_reason;
}
console.log(JSON.stringify({ text, finish_reason, chunks }));
