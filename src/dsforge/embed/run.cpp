#include "dsforge/embed/run.h"

#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/embed/evaluate.h"

namespace dsforge::embed {

using nlohmann::ordered_json;

void write_embed_outputs(const std::string& dir, const EmbedConfig& cfg, const EmbedResult& r) {
  make_dirs(dir);
  save_word2vec_text(path_join(dir, "vectors.txt"), r.vectors);
  save_word2vec_binary(path_join(dir, "vectors.bin"), r.vectors);
  save_safetensors_vectors(dir, r.vectors, cfg.method);
}

namespace {
ordered_json report_json(const EmbedConfig& cfg, const TrainReport& t) {
  ordered_json j;
  j["method"] = cfg.method;
  j["settings"] = {{"dim", cfg.dim}, {"window", cfg.window}, {"min_count", cfg.min_count}, {"epochs", cfg.epochs},
                   {"threads", cfg.threads}, {"seed", cfg.seed}};
  if (cfg.method == "glove") {
    j["settings"]["eta"] = cfg.alpha > 0 ? cfg.alpha : 0.05;
    j["settings"]["x_max"] = cfg.x_max;
    j["settings"]["alpha"] = cfg.glove_alpha;
    j["settings"]["memory_mb"] = cfg.memory_mb;
  } else {
    j["settings"]["negative"] = cfg.negative;
    j["settings"]["sample"] = cfg.sample;
    j["settings"]["alpha"] = cfg.alpha > 0 ? cfg.alpha : 0.025;
    j["settings"]["min_alpha"] = cfg.min_alpha;
    j["settings"]["shared_negatives"] = cfg.shared_negatives;
  }
  j["inputs"] = cfg.inputs;
  j["vocab_size"] = t.vocab_size;
  j["corpus_tokens"] = t.raw_words;
  j["corpus_words_in_vocab"] = t.corpus_words;
  j["vocab_seconds"] = t.vocab_seconds;
  j["train_seconds"] = t.train_seconds;
  if (cfg.method == "glove") {
    j["cooccurrence_pairs"] = t.cooc_entries;
    j["cooccurrence_runs"] = t.cooc_runs;
    j["cooccurrence_seconds"] = t.cooc_seconds;
    j["epoch_loss"] = t.epoch_loss;
  } else {
    j["words_per_second"] = t.words_per_second;
  }
  return j;
}
}  // namespace

std::string run_embed_train(const EmbedConfig& cfg, const std::string& out_dir) {
  if (out_dir.empty()) throw ConfigError("embed train: --out DIR is required");
  EmbedConfig c = cfg;
  if (c.tmp_dir.empty() && c.method == "glove") {
    make_dirs(out_dir);
    c.tmp_dir = out_dir;
  }
  const EmbedResult r = train_embeddings(c);
  write_embed_outputs(out_dir, c, r);
  const std::string j = report_json(c, r.report).dump(2);
  write_file_atomic(path_join(out_dir, "train.json"), j + "\n");
  return j;
}

std::string run_embed_eval(const EmbedEvalRequest& req) {
  const WordVectors v = load_vectors(req.vectors);
  ordered_json j;
  j["vectors"] = req.vectors;
  j["vocab_size"] = v.size();
  j["dim"] = v.dim;
  j["restrict_vocab"] = req.restrict_vocab;
  auto sim = [&](const char* name, const std::string& path) {
    if (path.empty()) return;
    const SimilarityResult s = evaluate_similarity(v, path, req.restrict_vocab);
    j[name] = {{"file", path}, {"spearman", s.spearman}, {"pearson", s.pearson}, {"pairs", s.pairs}, {"oov_pairs", s.oov},
               {"oov_ratio_percent", s.oov_ratio()}};
  };
  sim("wordsim353", req.wordsim);
  sim("simlex999", req.simlex);
  if (!req.analogies.empty()) {
    const AnalogyResult a = evaluate_analogies(v, req.analogies, req.restrict_vocab);
    ordered_json sections = ordered_json::array();
    int64_t sem_n = 0, sem_add = 0, syn_n = 0, syn_add = 0;
    for (const auto& s : a.sections) {
      const int64_t n = s.questions - s.oov;
      sections.push_back({{"section", s.name}, {"questions", s.questions}, {"oov", s.oov},
                          {"accuracy_3cosadd", n ? static_cast<double>(s.correct_add) / static_cast<double>(n) : 0.0},
                          {"accuracy_3cosmul", n ? static_cast<double>(s.correct_mul) / static_cast<double>(n) : 0.0}});
      (s.name.rfind("gram", 0) == 0 ? syn_n : sem_n) += n;
      (s.name.rfind("gram", 0) == 0 ? syn_add : sem_add) += s.correct_add;
    }
    j["analogies"] = {{"file", req.analogies},
                      {"questions", a.questions},
                      {"oov_questions", a.oov},
                      {"answered", a.answered()},
                      {"accuracy_3cosadd", a.accuracy_add()},
                      {"accuracy_3cosmul", a.accuracy_mul()},
                      {"semantic_3cosadd", sem_n ? static_cast<double>(sem_add) / static_cast<double>(sem_n) : 0.0},
                      {"syntactic_3cosadd", syn_n ? static_cast<double>(syn_add) / static_cast<double>(syn_n) : 0.0},
                      {"sections", sections}};
  }
  return j.dump(2);
}

std::string run_embed_neighbors(const std::string& vectors, const std::string& word, int k) {
  if (k < 1) throw ConfigError(fmt("embed neighbors: -k must be >= 1 (got ", k, ")"));
  const WordVectors v = load_vectors(vectors);
  const int64_t q = v.find(word);
  if (q < 0) throw DataError(fmt(vectors, ": word '", word, "' is not in the vocabulary (", v.size(), " words)"));
  std::string out;
  char buf[64];
  for (const auto& [w, s] : nearest(v, q, k)) {
    std::snprintf(buf, sizeof buf, "\t%.4f\n", static_cast<double>(s));
    out += w + buf;
  }
  return out;
}

}  // namespace dsforge::embed
