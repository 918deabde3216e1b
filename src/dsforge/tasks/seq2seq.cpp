#include "dsforge/tasks/seq2seq.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/corpus.h"
#include "dsforge/eval/metrics_files.h"
#include "dsforge/eval/text_metrics.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/tasks/finetune_run.h"
#include "dsforge/tasks/translate_model.h"
#include "dsforge/train/optim.h"

namespace dsforge::tasks {
namespace {

void subsample(std::vector<Pair>& v, int64_t max, uint64_t seed) {
  if (max <= 0 || static_cast<int64_t>(v.size()) <= max) return;
  shuffle_in_place(v, seed);
  v.resize(static_cast<size_t>(max));
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) {
    std::string clean = l;
    std::replace(clean.begin(), clean.end(), '\n', ' ');
    s += clean + "\n";
  }
  return s;
}

}  // namespace

Seq2SeqData wordnet_define_task(const std::string& wordnet_dir, int64_t max_train, int64_t max_test, uint64_t seed) {
  Seq2SeqData d;
  d.name = "wordnet-define";
  int64_t i = 0;
  data::for_each_wordnet_synset(wordnet_dir, [&](const data::WordNetSynset& s) {
    if (s.words.empty()) return;
    std::string word = s.words[0];
    std::replace(word.begin(), word.end(), '_', ' ');
    std::string def = s.gloss.substr(0, s.gloss.find(';'));
    while (!def.empty() && def.back() == ' ') def.pop_back();
    if (def.empty()) return;
    (i++ % 10 == 9 ? d.test : d.train).push_back({word, def});
  });
  subsample(d.train, max_train, seed);
  subsample(d.test, max_test, seed + 1);
  return d;
}

std::vector<Pair> read_parallel(const std::string& source_path, const std::string& target_path, int64_t max) {
  const auto src = eval::read_lines(source_path), tgt = eval::read_lines(target_path);
  if (src.size() != tgt.size())
    throw DataError(fmt(source_path, " has ", src.size(), " lines but ", target_path, " has ", tgt.size(),
                        "; parallel files must be line-aligned"));
  std::vector<Pair> out;
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i].empty() || tgt[i].empty())
      throw DataError(fmt(src[i].empty() ? source_path : target_path, ":", i + 1, ": empty line"));
    out.push_back({src[i], tgt[i]});
    if (max > 0 && static_cast<int64_t>(out.size()) >= max) break;
  }
  if (out.empty()) throw DataError(fmt(source_path, ": no lines"));
  return out;
}

std::vector<std::vector<std::string>> read_references(const std::string& path, bool id_column, int64_t max) {
  std::vector<std::vector<std::string>> out;
  const auto lines = eval::read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<std::string> fields;
    size_t start = 0;
    for (size_t tab; (tab = lines[i].find('\t', start)) != std::string::npos; start = tab + 1)
      fields.push_back(lines[i].substr(start, tab - start));
    fields.push_back(lines[i].substr(start));
    if (id_column) fields.erase(fields.begin());
    fields.erase(std::remove(fields.begin(), fields.end(), std::string()), fields.end());
    if (fields.empty()) throw DataError(fmt(path, ":", i + 1, ": no reference on this line"));
    out.push_back(std::move(fields));
    if (max > 0 && static_cast<int64_t>(out.size()) >= max) break;
  }
  return out;
}

GenerationScores score_generation(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                                  bool stem) {
  if (refs.size() != hyps.size())
    throw DataError(fmt("score_generation: ", hyps.size(), " outputs but ", refs.size(), " reference sets"));
  size_t streams = 1;
  for (const auto& r : refs) {
    if (r.empty()) throw DataError("score_generation: a segment without references");
    streams = std::max(streams, r.size());
  }
  std::vector<std::vector<std::string>> by_stream(streams, std::vector<std::string>(hyps.size()));
  for (size_t i = 0; i < refs.size(); ++i)
    for (size_t k = 0; k < streams; ++k) by_stream[k][i] = refs[i][k < refs[i].size() ? k : 0];
  GenerationScores s;
  const eval::BleuScore b = eval::corpus_bleu(hyps, by_stream);
  s.bleu = b.score;
  s.bleu_signature = b.signature;
  s.chrf = eval::corpus_chrf(hyps, by_stream).score;
  const auto r = eval::corpus_rouge(hyps, by_stream, {"rouge1", "rouge2", "rougeL"}, stem);
  s.rouge1 = 100 * r.at("rouge1").fmeasure;
  s.rouge2 = 100 * r.at("rouge2").fmeasure;
  s.rougeL = 100 * r.at("rougeL").fmeasure;
  return s;
}

namespace {

// Fine-tuning source -> target as a task of the one training loop: `source <eot> target <eot>`
// right-padded, the loss on the target tokens and the closing <eot> only.
class Seq2SeqTask : public train::TrainTask {
 public:
  using Seqs = std::vector<std::pair<std::vector<int64_t>, int64_t>>;  // tokens, index of the first target token
  Seq2SeqTask(model::CausalLm m, const Seqs& seqs, int64_t eot, double bias_speed, uint64_t seed, std::string identity)
      : m_(std::move(m)), seqs_(seqs), eot_(eot), bias_speed_(bias_speed), identity_(std::move(identity)),
        stream_(static_cast<int64_t>(seqs.size()), seed) {}

  torch::nn::Module& module() override { return *m_; }
  void init_weights(double, uint64_t) override {}  // pretrained: nothing starts fresh
  std::string describe() const override {
    return fmt(model::count_parameters(*m_), " parameters, ", seqs_.size(), " training pairs");
  }
  std::string config_json() const override { return model::model_config_to_json(m_->config()); }
  std::string identity() const override { return identity_; }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t, c10::Device device) override {
    const std::vector<int64_t> idx = stream_.next(rows, first, count);
    int64_t L = 2;
    for (int64_t i : idx) L = std::max<int64_t>(L, static_cast<int64_t>(seqs_[static_cast<size_t>(i)].first.size()));
    const auto B = static_cast<int64_t>(idx.size());
    at::Tensor x = at::full({B, L - 1}, eot_, at::kLong), y = at::full({B, L - 1}, -100, at::kLong);
    auto xa = x.accessor<int64_t, 2>();
    auto ya = y.accessor<int64_t, 2>();
    for (int64_t b = 0; b < B; ++b) {
      const auto& [ids, first_target] = seqs_[static_cast<size_t>(idx[static_cast<size_t>(b)])];
      for (int64_t j = 0; j + 1 < static_cast<int64_t>(ids.size()); ++j) {
        xa[b][j] = ids[static_cast<size_t>(j)];
        if (j + 1 >= first_target) ya[b][j] = ids[static_cast<size_t>(j + 1)];  // predict target tokens only
      }
    }
    at::Tensor loss = model::next_token_loss(m_->forward(x.to(device)), y.to(device));  // -100 (source, padding) ignored
    return {loss, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }
  std::vector<at::Tensor> step_sums() override { return m_->pending_expert_counts(); }
  train::Scalars after_step(int64_t) override {
    m_->update_expert_bias(bias_speed_);
    return {};
  }
  void discard_step() override { m_->update_expert_bias(0.0); }

 private:
  model::CausalLm m_;
  const Seqs& seqs_;
  int64_t eot_;
  double bias_speed_;
  std::string identity_;
  ExampleStream stream_;
};

}  // namespace

Seq2SeqResult finetune_seq2seq(const std::string& model_dir, const Seq2SeqData& data, const Seq2SeqOptions& opt,
                               const std::string& out_dir) {
  if (data.train.empty() || data.test.empty()) throw DataError(fmt(data.name, ": empty train or test split"));
  model::CausalLm m = model::load_pretrained(model_dir);
  const auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  const int64_t eot = tok.eot_id();
  if (eot < 0) throw ConfigError(fmt(model_dir, "/tokenizer.json: no special token to separate source and target"));
  const int64_t limit = m->config().max_position_embeddings;
  const TokenBudget budget = token_budget(limit, opt.max_source, opt.max_target);
  const int64_t max_src = budget.source, max_tgt = budget.target;
  auto encode = [&](const std::string& text, int64_t max) {
    auto ids = tok.encode(text, false);
    if (static_cast<int64_t>(ids.size()) > max) ids.resize(static_cast<size_t>(max));
    return std::vector<int64_t>(ids.begin(), ids.end());
  };

  // Training: `source <eot> target <eot>`, right-padded; the loss covers the target and its <eot>.
  std::vector<std::pair<std::vector<int64_t>, int64_t>> seqs;  // tokens, index of the first target token
  for (const auto& p : data.train) {
    std::vector<int64_t> s = encode(p.source, max_src);
    s.push_back(eot);
    const auto first = static_cast<int64_t>(s.size());
    for (int64_t t : encode(p.target, max_tgt)) s.push_back(t);
    s.push_back(eot);
    seqs.emplace_back(std::move(s), first);
  }
  FinetuneSchedule sched = finetune_schedule(static_cast<int64_t>(seqs.size()), opt);
  RunConfig cfg = finetune_run_config(sched, opt.overrides, out_dir.empty() ? "" : path_join(out_dir, "train"));
  Seq2SeqTask task(m, seqs, eot, cfg.train.bias_update_speed, opt.seed,
                   fmt("seq2seq|", model_dir, "|", data.name, "|", seqs.size(), "|", max_src, "|", max_tgt));
  Seq2SeqResult r;
  const auto t0 = std::chrono::steady_clock::now();
  r.epoch_losses = run_finetune(task, cfg, (sched.examples + opt.batch - 1) / opt.batch, "seq2seq");
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m->eval();

  // Decoding the test split: greedy (beam 1) and beam search.
  std::vector<std::string> sources, refs;
  for (const auto& p : data.test) {
    sources.push_back(p.source);
    refs.push_back(p.target);
  }
  std::vector<std::vector<std::string>> ref_sets = data.test_references;
  if (ref_sets.empty())
    for (const auto& t : refs) ref_sets.push_back({t});
  if (ref_sets.size() != data.test.size())
    throw DataError(fmt(data.name, ": ", ref_sets.size(), " reference sets for ", data.test.size(), " test pairs"));
  auto decode_all = [&](int64_t beam) {
    TranslateOptions to;
    to.beam = beam;
    to.max_source = max_src;
    to.max_target = max_tgt;
    to.length_penalty = opt.length_penalty;
    return translate_with(m, tok, eot, sources, to);
  };
  const auto t1 = std::chrono::steady_clock::now();
  r.outputs["greedy"] = decode_all(1);
  if (opt.beam > 1) r.outputs["beam"] = decode_all(opt.beam);
  r.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  for (const auto& [name, hyps] : r.outputs) r.scores[name] = score_generation(hyps, ref_sets, data.english_target);
  r.scores["copy-source"] = score_generation(sources, ref_sets, data.english_target);

  if (!out_dir.empty()) {
    make_dirs(out_dir);
    // The fine-tuned model, loadable by `data back-translate` and `generate`.
    const std::string model_out = path_join(out_dir, "model");
    model::save_pretrained(model_out, *m);
    model::copy_companion_files(model_dir, model_out);
    write_file_atomic(path_join(out_dir, "seq2seq.json"), seq2seq_json(data, r) + "\n");
    write_file_atomic(path_join(out_dir, "source.txt"), join_lines(sources));
    write_file_atomic(path_join(out_dir, "reference.txt"), join_lines(refs));
    for (const auto& [name, hyps] : r.outputs) write_file_atomic(path_join(out_dir, name + ".txt"), join_lines(hyps));
  }
  return r;
}

std::string seq2seq_json(const Seq2SeqData& data, const Seq2SeqResult& r) {
  size_t refs = 0;
  for (const auto& r : data.test_references) refs += r.size();
  nlohmann::ordered_json j = {{"task", data.name}, {"train_pairs", data.train.size()}, {"test_pairs", data.test.size()},
                              {"references_per_pair", data.test_references.empty() ? 1.0
                                                                                   : static_cast<double>(refs) / data.test.size()}};
  for (const auto& [name, s] : r.scores)
    j[name] = {{"bleu", s.bleu}, {"chrf", s.chrf}, {"rouge1", s.rouge1}, {"rouge2", s.rouge2}, {"rougeL", s.rougeL}};
  if (!r.scores.empty()) j["bleu_signature"] = r.scores.begin()->second.bleu_signature;
  j["epoch_train_loss"] = r.epoch_losses;
  j["train_seconds"] = r.train_seconds;
  j["decode_seconds"] = r.decode_seconds;
  return j.dump(2);
}

std::string seq2seq_table(const Seq2SeqResult& r) {
  std::string out = "                  BLEU    chrF  ROUGE-1  ROUGE-2  ROUGE-L\n";
  char buf[160];
  for (const char* name : {"greedy", "beam", "copy-source"}) {
    auto it = r.scores.find(name);
    if (it == r.scores.end()) continue;
    const auto& s = it->second;
    std::snprintf(buf, sizeof buf, "%-14s %7.2f %7.2f  %7.2f  %7.2f  %7.2f\n", name, s.bleu, s.chrf, s.rouge1, s.rouge2, s.rougeL);
    out += buf;
  }
  return out;
}

}  // namespace dsforge::tasks
