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
#include "dsforge/train/optim.h"

namespace dsforge::tasks {
namespace {

void subsample(std::vector<Pair>& v, int64_t max, uint64_t seed) {
  if (max <= 0 || static_cast<int64_t>(v.size()) <= max) return;
  std::mt19937_64 rng(seed);
  std::shuffle(v.begin(), v.end(), rng);
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

Seq2SeqResult finetune_seq2seq(const std::string& model_dir, const Seq2SeqData& data, const Seq2SeqOptions& opt,
                               const std::string& out_dir) {
  if (data.train.empty() || data.test.empty()) throw DataError(fmt(data.name, ": empty train or test split"));
  model::CausalLm m = model::load_pretrained(model_dir);
  const auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  const int64_t eot = tok.eot_id();
  if (eot < 0) throw ConfigError(fmt(model_dir, "/tokenizer.json: no special token to separate source and target"));
  const int64_t limit = m->config().max_position_embeddings;
  const int64_t max_src = std::min(opt.max_source, limit / 2), max_tgt = std::min(opt.max_target, limit - max_src - 2);
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
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& p : m->named_parameters()) named.emplace_back(p.key(), p.value());
  std::vector<at::Tensor> params;
  for (auto& [n, p] : named) params.push_back(p);
  train::AdamW adam(named, {opt.lr, 0.9, 0.999, 1e-8, opt.weight_decay});
  Seq2SeqResult r;
  std::vector<size_t> order(seqs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const int64_t steps_per_epoch = (static_cast<int64_t>(order.size()) + opt.batch - 1) / opt.batch;
  const int64_t total = steps_per_epoch * opt.epochs, warmup = std::max<int64_t>(1, total / 20);
  std::mt19937_64 rng(opt.seed);
  int64_t step = 0;
  const auto t0 = std::chrono::steady_clock::now();
  m->train();
  for (int64_t epoch = 0; epoch < opt.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++step) {
      const size_t b0 = static_cast<size_t>(s * opt.batch), b1 = std::min(order.size(), b0 + static_cast<size_t>(opt.batch));
      int64_t L = 0;
      for (size_t i = b0; i < b1; ++i) L = std::max<int64_t>(L, static_cast<int64_t>(seqs[order[i]].first.size()));
      const auto B = static_cast<int64_t>(b1 - b0);
      at::Tensor x = at::full({B, L - 1}, eot, at::kLong), y = at::full({B, L - 1}, -100, at::kLong);
      auto xa = x.accessor<int64_t, 2>();
      auto ya = y.accessor<int64_t, 2>();
      for (int64_t b = 0; b < B; ++b) {
        const auto& [ids, first] = seqs[order[b0 + static_cast<size_t>(b)]];
        for (int64_t j = 0; j + 1 < static_cast<int64_t>(ids.size()); ++j) {
          xa[b][j] = ids[static_cast<size_t>(j)];
          if (j + 1 >= first) ya[b][j] = ids[static_cast<size_t>(j + 1)];  // predict target tokens only
        }
      }
      const double lr = train::warmup_linear_lr(step, warmup, total, opt.lr);
      adam.set_lr(lr);
      adam.zero_grad();
      at::Tensor loss = model::next_token_loss(m->forward(x), y);  // -100 (source, padding) is ignored
      loss.backward();
      m->update_expert_bias(1e-3);
      train::clip_grad_norm(params, 1.0);
      adam.step();
      loss_sum += loss.item<double>();
    }
    r.epoch_losses.push_back(loss_sum / static_cast<double>(steps_per_epoch));
    log_info("seq2seq: epoch ", epoch + 1, "/", opt.epochs, " train loss ", r.epoch_losses.back());
  }
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

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
    model::BeamOptions bo;
    bo.beam = beam;
    bo.max_new_tokens = max_tgt + 1;
    bo.length_penalty = opt.length_penalty;
    bo.stop_tokens = {eot};
    std::vector<std::string> out;
    for (const auto& p : data.test) {
      std::vector<int64_t> prompt = encode(p.source, max_src);
      prompt.push_back(eot);
      const auto res = model::beam_search(m, prompt, bo);
      out.push_back(tok.decode(std::vector<int32_t>(res.tokens.begin(), res.tokens.end())));
    }
    return out;
  };
  const auto t1 = std::chrono::steady_clock::now();
  r.outputs["greedy"] = decode_all(1);
  if (opt.beam > 1) r.outputs["beam"] = decode_all(opt.beam);
  r.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  for (const auto& [name, hyps] : r.outputs) r.scores[name] = score_generation(hyps, ref_sets, data.english_target);
  r.scores["copy-source"] = score_generation(sources, ref_sets, data.english_target);

  if (!out_dir.empty()) {
    make_dirs(out_dir);
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
