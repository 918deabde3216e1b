// Drives `dsforge serve` with the official OpenAI npm client (pinned by scripts/setup.sh) and prints what
// it received as JSON, for tests/test_serve.cpp to check.
//
//   DSFORGE_NODE_MODULES=build/node/node_modules node tests/serve/openai_client.mjs http://127.0.0.1:PORT/v1 MODEL
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const [baseURL, model] = process.argv.slice(2);
const modules = process.env.DSFORGE_NODE_MODULES;
const {default: OpenAI} = await import(pathToFileURL(join(modules, "openai", "index.mjs")).href);
const client = new OpenAI({baseURL, apiKey: process.env.DSFORGE_API_KEY || "none", maxRetries: 0});
const out = {};

const models = await client.models.list();
out.models = models.data.map((m) => m.id);

const prompt = "The cat sees";
const common = {model, prompt, max_tokens: 12, temperature: 0.8, seed: 42};
const plain = await client.completions.create(common);
out.completion = {text: plain.choices[0].text, finish_reason: plain.choices[0].finish_reason, usage: plain.usage};

let streamed = "";
let finish = null, usage = null, chunks = 0;
for await (const chunk of await client.completions.create({...common, stream: true})) {
  ++chunks;
  streamed += chunk.choices[0]?.text ?? "";
  finish = chunk.choices[0]?.finish_reason ?? finish;
  usage = chunk.usage ?? usage;
}
out.completion_stream = {text: streamed, finish_reason: finish, usage, chunks};

const messages = [{role: "system", content: "Be brief."}, {role: "user", content: "Tell me about the red ball."}];
const chat = await client.chat.completions.create({model, messages, max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 2});
out.chat = {content: chat.choices[0].message.content, role: chat.choices[0].message.role, finish_reason: chat.choices[0].finish_reason,
            usage: chat.usage, logprobs: chat.choices[0].logprobs?.content?.length ?? -1};

let chatStreamed = "";
for await (const chunk of await client.chat.completions.create({model, messages, max_tokens: 10, temperature: 0, stream: true})) {
  chatStreamed += chunk.choices[0]?.delta?.content ?? "";
}
out.chat_stream = {content: chatStreamed};

try {
  await client.completions.create({model, prompt, max_tokens: -3});
  out.bad_request = "accepted";
} catch (e) {
  out.bad_request = {status: e.status, type: e.error?.type ?? e.type, param: e.error?.param ?? e.param};
}
process.stdout.write(JSON.stringify(out));
