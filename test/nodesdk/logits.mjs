// logits.mjs evaluates token ids with llama.cpp (node-llama-cpp's prebuilt
// CPU binary) and prints the raw logits after each position, the reference
// test/llamacpp compares the native engine with. Usage:
//   node logits.mjs MODULES MODEL.gguf < tokens.json   → [[logit per token id], …]
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const [modules, modelPath] = process.argv.slice(2);
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(join(modules, 'node-llama-cpp', 'dist', 'index.js')).href);
const tokens = JSON.parse(readFileSync(0, 'utf8'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
// An F32 KV cache (llama.cpp's default is F16) and no flash attention: the
// native engine keeps K and V in F32.
const context = await model.createContext({ contextSize: Math.max(32, tokens.length + 1), threads: 1, flashAttention: false,
  experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
const sequence = context.getSequence();
const out = await sequence.controlledEvaluate(tokens.map((t) => [t, { generateNext: { logits: true } }]));
const rows = out.map((o) => {
  const row = [];
  for (const [tok, v] of o.next.logits) row[tok] = v;
  return row;
});
process.stdout.write(JSON.stringify(rows));
await context.dispose();
await model.dispose();
await llama.dispose();
