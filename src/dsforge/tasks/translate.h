// Translation with a model fine-tuned by `dsforge finetune --task parallel` (its --out DIR/model
// folder): each source is fed as `source <eot>` and continued until <eot>, as in training.
//
// Greedy decoding and sampling run many sentences at once (sorted by length, left-padded, one cached
// forward per step for the whole batch); beam search runs one sentence at a time. Sampling is what
// back-translation wants (Edunov et al. 2018: sampled synthetic sources train better than beam's).
//
//   Translator de_en("runs/mt-de-en/model");
//   TranslateOptions o; o.temperature = 1.0; o.seed = 7;
//   std::vector<std::string> en = de_en.translate({"Ein Hund rennt.", "Zwei Männer lachen."}, o);
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsforge::tasks {

struct TranslateOptions {
  int64_t beam = 1;               // 1 = greedy or sampling (batched); > 1 = beam search
  double temperature = 0.0;       // > 0 with beam 1: sample
  double top_p = 1.0;             // sampling: nucleus
  int64_t top_k = 0;              // sampling: 0 = no limit
  double length_penalty = 1.0;    // beam: score = log p / length^this
  int64_t max_source = 96;        // source tokens kept (at most half the model's context), as in training
  int64_t max_target = 48;        // tokens generated at most (bounded by the context left)
  int64_t batch = 32;             // sentences decoded together (greedy and sampling)
  uint64_t seed = 0;              // sampling: each batch draws from seed + its first sentence's index
};

class Translator {
 public:
  // A model folder with config.json, model.safetensors and tokenizer.json (the tokenizer needs a
  // special token to close the source: ConfigError naming the file otherwise).
  explicit Translator(const std::string& model_dir);
  ~Translator();
  Translator(Translator&&) noexcept;
  Translator& operator=(Translator&&) noexcept;

  // One output per source, in order; an empty source gives an empty output.
  std::vector<std::string> translate(const std::vector<std::string>& sources, const TranslateOptions& opt) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsforge::tasks
