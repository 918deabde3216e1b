// What the decode benchmarks share (bench_serve, bench_quant): model folders of a preset with random
// weights and a BPE tokenizer trained on TinyStories (or a filler text without ../shared/data), and
// llama.cpp's decode speed on a GGUF file through node-llama-cpp's prebuilt binaries
// (tests/llama/probe.mjs, the npm packages scripts/setup.sh installs).
#pragma once
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/core/io.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "bench_util.h"

namespace dsforge::bench {

inline std::string node_modules() {
  if (const char* env = std::getenv("DSFORGE_NODE_MODULES")) return env;
  return (std::filesystem::path(DSFORGE_CLI).parent_path() / "node" / "node_modules").string();
}

inline bool llama_available() {
  return std::system("node --version >/dev/null 2>&1") == 0 && file_exists(node_modules() + "/node-llama-cpp/package.json");
}

inline std::string tokenizer_corpus() {
  const std::string p = std::string(DSFORGE_SOURCE_DIR) + "/../shared/data/tinystories/train_first1000.txt";
  if (file_exists(p)) return read_file(p);
  std::string t;
  for (int i = 0; i < 4000; ++i) t += "Once upon a time there was a little cat who liked to play in the park with a red ball. ";
  return t;
}

// <dir>/<preset>: a model folder of `preset` with random weights and a BPE tokenizer of (up to) its
// vocabulary size.
inline std::string make_random_model(const std::string& dir, const std::string& preset) {
  model::ModelConfig mc = model::model_config_from_preset(preset);
  tok::BpeTokenizer::TrainOptions to;
  to.vocab_size = mc.vocab_size;
  const auto tok = tok::BpeTokenizer::train({tokenizer_corpus()}, to);
  mc.vocab_size = tok.vocab_size();
  model::CausalLm m = model::build_model(mc);
  m->init_weights(0.02, 1);
  const std::string out = dir + "/" + preset;
  model::save_pretrained(out, *m);
  tok.save(out + "/tokenizer.json");
  return out;
}

// The prompt of the decode benchmarks: 16 token ids spread over the vocabulary.
inline std::vector<int64_t> bench_prompt(int64_t vocab) {
  std::vector<int64_t> p;
  for (int i = 0; i < 16; ++i) p.push_back(1 + i * 7 % (vocab - 1));
  return p;
}

// Greedy decode tokens/s after a warm-up, the median of 3: batch 1 (128 new tokens after bench_prompt) and
// batch 16 (the prompt with 16 different first tokens, 64 new tokens each).
struct DecodeSpeed {
  double batch1 = 0, batch16 = 0;
};
inline DecodeSpeed decode_speed(const model::CausalLm& m) {
  const std::vector<int64_t> prompt = bench_prompt(m->config().vocab_size);
  model::SampleOptions o;
  o.max_new_tokens = 8;
  model::generate(m, {prompt}, o);  // warm-up
  DecodeSpeed d;
  o.max_new_tokens = 128;
  d.batch1 = 128.0 / median3([&] { model::generate(m, {prompt}, o); });
  std::vector<std::vector<int64_t>> batch;
  for (int r = 0; r < 16; ++r) {
    auto p = prompt;
    p[0] = 1 + r;
    batch.push_back(p);
  }
  o.max_new_tokens = 64;
  d.batch16 = 16 * 64.0 / median3([&] { model::generate(m, batch, o); });
  return d;
}

struct LlamaDecode {
  bool ok = false;
  double tokens_per_s = 0, peak_rss_mb = 0;
  std::string error;
};
// llama.cpp greedy decode of `n` tokens after `prompt` on `gguf`, `threads` threads (work files in `work_dir`).
inline LlamaDecode llama_decode(const std::string& gguf, int64_t n_vocab, const std::vector<int64_t>& prompt, int n,
                                int threads, const std::string& work_dir) {
  const nlohmann::json req = {{"n_vocab", n_vocab}, {"decode_speed", {{"prompt", prompt}, {"n", n}}}};
  write_file_atomic(work_dir + "/req.json", req.dump());
  const std::string cmd = "DSFORGE_NODE_MODULES='" + node_modules() + "' DSFORGE_LLAMA_THREADS=" + std::to_string(threads) +
                          " node " + DSFORGE_SOURCE_DIR + "/tests/llama/probe.mjs '" + gguf + "' '" + work_dir +
                          "/req.json' > '" + work_dir + "/out.json' 2>'" + work_dir + "/err.txt'";
  LlamaDecode r;
  if (std::system(cmd.c_str()) != 0) {
    r.error = read_file(work_dir + "/err.txt");
    return r;
  }
  const auto j = nlohmann::json::parse(read_file(work_dir + "/out.json"));
  r.ok = true;
  r.tokens_per_s = j["decode_tokens_per_s"].get<double>();
  r.peak_rss_mb = j["peak_rss_mb"].get<double>();
  return r;
}

}  // namespace dsforge::bench
