// check.cjs drives the sidecar with the official OpenAI Node SDK (the
// package pinned in package.json, found through OPENAI_MODULE) and prints
// what it got as JSON for test/e2e TestNodeSDK to judge. Usage:
//   OPENAI_MODULE=…/node_modules/openai node check.cjs BASE_URL MODEL
'use strict';
const OpenAI = require(process.env.OPENAI_MODULE).default;

const [base, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'unused', maxRetries: 0 });

const schema = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 12 },
    unit: { enum: ['celsius', 'fahrenheit'] },
    days: { type: 'integer' },
  },
  required: ['city', 'unit', 'days'],
  additionalProperties: false,
};
const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 } }, required: ['city'], additionalProperties: false },
  },
}];

async function main() {
  const out = { schema };
  // Structured output, two choices.
  const so = await client.chat.completions.create({
    model, n: 2, seed: 1, max_tokens: 80,
    messages: [{ role: 'user', content: 'the weather in Paris as JSON' }],
    response_format: { type: 'json_schema', json_schema: { name: 'weather', strict: true, schema } },
  });
  out.structured = so.choices.map((c) => c.message.content);

  // A required tool call, then its result and the answer.
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const first = await client.chat.completions.create({ model, messages, tools, tool_choice: 'required', max_tokens: 120, seed: 2 });
  const msg = first.choices[0].message;
  out.call = { finish: first.choices[0].finish_reason, calls: msg.tool_calls, content: msg.content };
  messages.push(msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: '{"temp_c":21}' });
  const second = await client.chat.completions.create({ model, messages, tools, tool_choice: 'none', max_tokens: 8, seed: 3 });
  out.answer = { content: second.choices[0].message.content, calls: second.choices[0].message.tool_calls || [],
    finish: second.choices[0].finish_reason, promptTokens: second.usage.prompt_tokens, firstPromptTokens: first.usage.prompt_tokens };

  // The same call streamed: the SDK's stream helper joins the deltas.
  const runner = client.chat.completions.stream({ model, messages: messages.slice(0, 1), tools, tool_choice: 'required', max_tokens: 120, seed: 2 });
  let chunks = 0;
  runner.on('chunk', () => { chunks++; });
  const final = await runner.finalChatCompletion();
  out.streamed = { calls: final.choices[0].message.tool_calls, finish: final.choices[0].finish_reason, chunks };

  // Log probabilities.
  const lp = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, logprobs: true, top_logprobs: 2 });
  out.logprobs = lp.choices[0].logprobs.content.map((t) => ({ token: t.token, logprob: t.logprob, top: t.top_logprobs.length }));
  out.logprobTokens = lp.usage.completion_tokens;

  // Embeddings: the SDK asks for base64 and decodes it.
  const emb = await client.embeddings.create({ model, input: ['the weather in Paris', 'a recipe for bread'] });
  out.embeddings = emb.data.map((d) => ({ index: d.index, length: d.embedding.length, norm2: d.embedding.reduce((a, x) => a + x * x, 0) }));

  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
