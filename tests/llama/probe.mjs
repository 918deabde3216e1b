// Runs a GGUF file in real llama.cpp (the prebuilt binaries of the npm package node-llama-cpp, pinned by
// scripts/setup.sh) and prints what the dsforge tests compare against, as JSON on stdout.
//
//   DSFORGE_NODE_MODULES=build/node/node_modules node tests/llama/probe.mjs model.gguf request.json
//
// request.json: {"n_vocab": V, "tokenize": ["text", ...],            -> "tokens": [[id, ...], ...]
//                "logprobs": [[id, ...], ...],         -> "logprobs": per sequence, per position, the log
//                                                          probability of every vocabulary entry
//                "greedy": [{"prompt": [ids], "n": 32}], -> "greedy": [[id, ...], ...]
//                "decode_speed": {"prompt": [ids], "n": 128}} -> "decode_tokens_per_s"
// The KV cache is f32 (the default f16 cache would blur the comparison); one CPU thread unless
// DSFORGE_LLAMA_THREADS says otherwise.
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const [modelPath, requestPath] = process.argv.slice(2);
if (!modelPath || !requestPath) {
  console.error("usage: probe.mjs MODEL.gguf REQUEST.json");
  process.exit(2);
}
const modules = process.env.DSFORGE_NODE_MODULES;
if (!modules) {
  console.error("probe.mjs: set DSFORGE_NODE_MODULES to the node_modules folder holding node-llama-cpp");
  process.exit(2);
}
const {getLlama, LlamaLogLevel} = await import(pathToFileURL(join(modules, "node-llama-cpp", "dist", "index.js")).href);
const request = JSON.parse(readFileSync(requestPath, "utf8"));
const threads = Number(process.env.DSFORGE_LLAMA_THREADS || 1);

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: threads});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const longest = Math.max(
  16,
  ...(request.logprobs ?? []).map((s) => s.length),
  ...(request.greedy ?? []).map((g) => g.prompt.length + g.n),
  request.decode_speed ? request.decode_speed.prompt.length + request.decode_speed.n : 0);
const context = await model.createContext({
  contextSize: longest + 8, batchSize: Math.max(longest + 8, 32), sequences: 1, threads,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
const sequence = context.getSequence();
const out = {};

function logprobRow(probabilities, n) {
  const row = new Array(n).fill(-Infinity);
  for (const [token, p] of probabilities) row[token] = Math.log(p);
  return row;
}

if (request.tokenize) out.tokens = request.tokenize.map((text) => model.tokenize(text, false));

const nVocab = request.n_vocab;  // the GGUF token list's length (node-llama-cpp does not expose it)
if (request.logprobs) {
  out.logprobs = [];
  for (const ids of request.logprobs) {
    await sequence.clearHistory();
    const res = await sequence.controlledEvaluate(ids.map((t) => [t, {generateNext: {probabilities: true}}]));
    out.logprobs.push(res.map((r) => logprobRow(r.next.probabilities, nVocab)));
  }
}

async function greedy(prompt, n) {
  await sequence.clearHistory();
  const produced = [];
  let input = prompt;
  for (let i = 0; i < n; ++i) {
    const res = await sequence.controlledEvaluate(input.map((t, k) => (k === input.length - 1 ? [t, {generateNext: {probabilities: true}}] : t)));
    const next = res[input.length - 1].next.probabilities.entries().next().value[0];
    produced.push(next);
    input = [next];
  }
  return produced;
}
if (request.greedy) {
  out.greedy = [];
  for (const g of request.greedy) out.greedy.push(await greedy(g.prompt, g.n));
}

if (request.decode_speed) {
  const {prompt, n} = request.decode_speed;
  await sequence.clearHistory();
  await sequence.controlledEvaluate(prompt.slice(0, -1));
  let last = prompt[prompt.length - 1];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; ++i) {
    const res = await sequence.controlledEvaluate([[last, {generateNext: {token: true, options: {temperature: 0}}}]]);
    last = res[0].next.token;
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  out.decode_tokens_per_s = n / seconds;
}
out.n_vocab = nVocab;
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
out.peak_rss_mb = hwm ? Number(hwm[1]) / 1024 : process.memoryUsage().rss / 1048576;
process.stdout.write(JSON.stringify(out));
await context.dispose();
await model.dispose();
await llama.dispose();
