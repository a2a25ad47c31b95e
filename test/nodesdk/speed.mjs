// speed.mjs times llama.cpp (node-llama-cpp's prebuilt CPU binary) on a
// model file, for the native engine's benchmarks to compare with on the
// same file and cores. Usage:
//   node speed.mjs MODULES MODEL.gguf < {"threads":2,"prompt":512,"decode":64,"streams":16,"streamTokens":32}
// prints {"prefill": prompt tok/s, "decode": single-stream tok/s, "streams": aggregate tok/s}.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const [modules, modelPath] = process.argv.slice(2);
const cfg = JSON.parse(readFileSync(0, 'utf8'));
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(join(modules, 'node-llama-cpp', 'dist', 'index.js')).href);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const tok = (i) => 300 + ((i * 7919) % 30000);
const result = {};

// Prefill: one prompt in one batch, then single-stream decode of greedy
// tokens (each evaluated as llama.cpp's server would: one token per step).
{
  const context = await model.createContext({ contextSize: cfg.prompt + cfg.decode + 8, batchSize: cfg.prompt, threads: cfg.threads });
  const seq = context.getSequence();
  const prompt = Array.from({ length: cfg.prompt }, (_, i) => tok(i));
  // warm: one token, then clear
  await seq.evaluateWithoutGeneratingNewTokens([tok(1)]);
  await seq.clearHistory();
  let t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  result.prefill = cfg.prompt / ((performance.now() - t0) / 1000);
  await seq.clearHistory();
  await seq.evaluateWithoutGeneratingNewTokens([tok(2)]);
  t0 = performance.now();
  for (let i = 0; i < cfg.decode; i++) await seq.evaluateWithoutGeneratingNewTokens([tok(3 + i)]);
  result.decode = cfg.decode / ((performance.now() - t0) / 1000);
  await context.dispose();
}

// Streams: each sequence decodes streamTokens tokens one at a time, all at
// once; node-llama-cpp batches the sequences' pending tokens into one
// llama_decode per step.
if (cfg.streams > 0) {
  const context = await model.createContext({ contextSize: cfg.streams * (cfg.streamTokens + 8), sequences: cfg.streams, threads: cfg.threads, batchSize: 512 });
  const seqs = Array.from({ length: cfg.streams }, () => context.getSequence());
  await Promise.all(seqs.map((s, j) => s.evaluateWithoutGeneratingNewTokens([tok(j)])));
  const t0 = performance.now();
  await Promise.all(seqs.map(async (s, j) => {
    for (let i = 0; i < cfg.streamTokens; i++) await s.evaluateWithoutGeneratingNewTokens([tok(100 * j + i)]);
  }));
  result.streams = (cfg.streams * cfg.streamTokens) / ((performance.now() - t0) / 1000);
  await context.dispose();
}
process.stdout.write(JSON.stringify(result));
await model.dispose();
await llama.dispose();
