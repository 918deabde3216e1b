#include "dsforge/tasks/classify.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/data/corpus.h"
#include "dsforge/eval/metrics_files.h"
#include "dsforge/log/tensorboard.h"
#include "dsforge/model/io.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/tasks/finetune_run.h"
#include "dsforge/tasks/text_classifier.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/train/optim.h"
#include "dsforge/train/adversarial.h"

namespace dsforge::tasks {

std::vector<Example> read_tsv_examples(const std::string& path, int64_t max) {
  const auto lines = eval::read_lines(path);
  std::vector<Example> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.empty()) continue;
    const size_t tab = line.rfind('\t');
    if (tab == std::string::npos)
      throw DataError(fmt(path, ":", i + 1, ": expected 'text<TAB>label', found no tab"));
    Example e{line.substr(0, tab), line.substr(tab + 1)};
    while (!e.label.empty() && std::isspace(static_cast<unsigned char>(e.label.back()))) e.label.pop_back();
    if (i == 0 && e.label == "label") continue;  // header
    if (e.label.empty()) throw DataError(fmt(path, ":", i + 1, ": empty label"));
    out.push_back(std::move(e));
    if (max > 0 && static_cast<int64_t>(out.size()) >= max) break;
  }
  if (out.empty()) throw DataError(fmt(path, ": no examples"));
  return out;
}

namespace {
void subsample(std::vector<Example>& v, int64_t max, uint64_t seed) {
  if (max <= 0 || static_cast<int64_t>(v.size()) <= max) return;
  shuffle_in_place(v, seed);
  v.resize(static_cast<size_t>(max));
}
}  // namespace

ClassifyData wordnet_lexname_task(const std::string& wordnet_dir, int64_t max_train, int64_t max_test, uint64_t seed) {
  ClassifyData d;
  d.name = "wordnet-lexname";
  int64_t i = 0;
  data::for_each_wordnet_synset(wordnet_dir, [&](const data::WordNetSynset& s) {
    (i++ % 10 == 9 ? d.test : d.train).push_back({s.gloss, data::wordnet_lexname(s.lex_filenum)});
  });
  subsample(d.train, max_train, seed);
  subsample(d.test, max_test, seed + 1);
  return d;
}

namespace {

at::Tensor pooled(model::CausalLm& m, const at::Tensor& x, const at::Tensor& mask) { return masked_mean(m->hidden_states(x), mask); }

std::pair<at::Tensor, at::Tensor> encode_batch(const tok::BpeTokenizer& tok, const std::vector<const Example*>& ex, int64_t max_len,
                                               int64_t pad) {
  std::vector<std::string> texts;
  for (const Example* e : ex) texts.push_back(e->text);
  return encode_texts(tok, texts, max_len, pad);
}

// Fine-tuning a classifier as a task of the one training loop: cross-entropy of the head over the
// pooled hidden states of a batch of examples.
class ClassifyTask : public train::TrainTask {
 public:
  ClassifyTask(std::shared_ptr<ClassifierModule> m, const tok::BpeTokenizer& tok, const std::vector<Example>& train,
               const std::map<std::string, int64_t>& label_index, const FinetuneOptions& opt, double bias_speed,
               std::string identity)
      : m_(std::move(m)), tok_(tok), train_(train), label_index_(label_index), max_len_(opt.max_len),
        pad_(std::max<int64_t>(tok.eot_id(), 0)), bias_speed_(bias_speed), identity_(std::move(identity)), opt_(opt),
        stream_(static_cast<int64_t>(train.size()), opt.seed) {}

  torch::nn::Module& module() override { return *m_; }
  void init_weights(double std, uint64_t seed) override {  // the backbone is pretrained: only the head starts fresh
    at::NoGradGuard ng;
    auto gen = at::detail::createCPUGenerator(seed);
    m_->head->weight.normal_(0.0, std, gen);
    m_->head->bias.zero_();
  }
  std::string describe() const override {
    return fmt(model::count_parameters(*m_), " parameters, ", m_->head->weight.size(0), " classes, ", train_.size(),
               " training examples");
  }
  std::string config_json() const override { return model::model_config_to_json(m_->backbone->config()); }
  std::string identity() const override { return identity_; }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) override {
    if (step != step_) step_ = step, micro_ = 0;
    const int64_t row0 = micro_++ * rows + first;
    std::vector<std::string> texts;
    std::vector<int64_t> y;
    for (int64_t i : stream_.next(rows, first, count)) {
      const Example& e = train_[static_cast<size_t>(i)];
      // Augmented texts are keyed by (seed, step, row): the same after a resume.
      texts.push_back(opt_.augment_text ? opt_.augment_text(e.text, row_seed(step, row0 + static_cast<int64_t>(texts.size()))) : e.text);
      y.push_back(label_index_.at(e.label));
    }
    auto [x, mask] = encode_texts(tok_, texts, max_len_, pad_);
    x = x.to(device);
    mask = mask.to(device);
    const at::Tensor target = at::tensor(y, at::kLong).to(device);
    at::Tensor logits, loss;
    if (!opt_.adversarial) {
      logits = m_->head(pooled(m_->backbone, x, mask));
      loss = at::cross_entropy_loss(logits, target);
    } else {
      std::tie(logits, loss) = adversarial_loss(x, mask, target, step, row0);
    }
    at::Tensor total = loss;
    if (opt_.counterfactual && opt_.clp_weight > 0) total = total + opt_.clp_weight * pairing_penalty(texts, logits, device);
    return {total, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }
  std::vector<at::Tensor> step_sums() override { return m_->backbone->pending_expert_counts(); }
  train::Scalars after_step(int64_t) override {
    m_->backbone->update_expert_bias(bias_speed_);  // keep MoE routing balanced while fine-tuning
    return {};
  }
  void discard_step() override { m_->backbone->update_expert_bias(0.0); }
  int64_t tokens_per_row() const override { return max_len_; }

 private:
  uint64_t row_seed(int64_t step, int64_t row) const {
    return SplitMix64(opt_.seed ^ 0x7e47ULL ^ (static_cast<uint64_t>(step) << 20) ^ static_cast<uint64_t>(row)).next();
  }
  at::Tensor logits_of_embeddings(const at::Tensor& e, const at::Tensor& mask) {
    return logits_from_embeddings(*m_, e, mask, "adversarial fine-tuning (it perturbs token embeddings)");
  }
  // Embedding-space adversarial loss: PGD (attacked with the model in eval mode) or FreeLB. Returns the
  // clean logits (for logit pairing) and the loss.
  std::pair<at::Tensor, at::Tensor> adversarial_loss(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& target,
                                                     int64_t step, int64_t row0) {
    train::AttackOptions a = *opt_.adversarial;
    a.seed = row_seed(step, row0) ^ 0xad5eULL;
    const at::Tensor e = m_->backbone->embed(x);
    const at::Tensor token_mask = mask.unsqueeze(-1);
    auto ce = [&](const at::Tensor& emb, at::Reduction::Reduction r) {
      return at::cross_entropy_loss(logits_of_embeddings(emb, mask), target, {}, r);
    };
    if (opt_.adversarial_mode == "freelb") {  // the clean logits only when logit pairing needs them
      const at::Tensor logits = opt_.counterfactual && opt_.clp_weight > 0 ? logits_of_embeddings(e, mask) : at::Tensor();
      return {logits, train::freelb_loss([&](const at::Tensor& emb) { return ce(emb, at::Reduction::None); }, e, a, token_mask)};
    }
    const at::Tensor logits = logits_of_embeddings(e, mask);
    const at::Tensor clean = at::cross_entropy_loss(logits, target);
    m_->eval();
    const at::Tensor attacked = train::perturb([&](const at::Tensor& emb) { return ce(emb, at::Reduction::None); }, e, a, token_mask);
    m_->train();
    const at::Tensor adv = ce(e + (attacked - e.detach()), at::Reduction::Mean);
    return {logits, (1 - opt_.adversarial_weight) * clean + opt_.adversarial_weight * adv};
  }
  // Counterfactual logit pairing: mean |logits(x) - logits(x')| over texts whose counterfactual differs.
  at::Tensor pairing_penalty(const std::vector<std::string>& texts, const at::Tensor& logits, c10::Device device) {
    std::vector<std::string> swapped;
    std::vector<int64_t> rows;
    for (size_t i = 0; i < texts.size(); ++i) {
      std::string cf = opt_.counterfactual(texts[i]);
      if (cf == texts[i]) continue;
      swapped.push_back(std::move(cf));
      rows.push_back(static_cast<int64_t>(i));
    }
    if (rows.empty()) return at::zeros({}, logits.options());
    auto [xc, mc] = encode_texts(tok_, swapped, max_len_, pad_);
    const at::Tensor other = m_->head(pooled(m_->backbone, xc.to(device), mc.to(device)));
    const at::Tensor mine = logits.index_select(0, at::tensor(rows, at::kLong).to(device));
    return (mine - other).abs().mean(-1).sum() / static_cast<double>(texts.size());
  }

  std::shared_ptr<ClassifierModule> m_;
  const tok::BpeTokenizer& tok_;
  const std::vector<Example>& train_;
  const std::map<std::string, int64_t>& label_index_;
  int64_t max_len_, pad_;
  double bias_speed_;
  std::string identity_;
  const FinetuneOptions& opt_;
  ExampleStream stream_;
  int64_t step_ = -1, micro_ = 0;
};

}  // namespace

FinetuneResult finetune_classifier(const std::string& model_dir, const ClassifyData& data, const FinetuneOptions& opt,
                                   const std::string& out_dir) {
  if (data.train.empty() || data.test.empty()) throw DataError(fmt(data.name, ": empty train or test split"));
  model::CausalLm backbone = model::load_pretrained(model_dir);
  const auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  const int64_t pad = std::max<int64_t>(tok.eot_id(), 0);

  std::map<std::string, int64_t> label_index;
  for (const auto& e : data.train) label_index.emplace(e.label, 0);
  std::vector<std::string> labels;
  for (auto& [l, i] : label_index) {
    i = static_cast<int64_t>(labels.size());
    labels.push_back(l);
  }
  int64_t unseen = 0;  // test labels the training split never shows: they can only count as errors
  for (const auto& e : data.test) unseen += label_index.count(e.label) == 0;
  if (unseen > 0) log_info("finetune: ", unseen, " test examples have labels absent from the training split");

  const int64_t d = backbone->config().hidden_size, C = static_cast<int64_t>(labels.size());
  auto classifier = std::make_shared<ClassifierModule>(backbone, d, C);
  torch::nn::Linear head = classifier->head;
  FinetuneSchedule sched = finetune_schedule(static_cast<int64_t>(data.train.size()), opt);
  RunConfig cfg = finetune_run_config(sched, opt.overrides, out_dir.empty() ? "" : path_join(out_dir, "train"));
  std::string extras;  // robustness and fairness options change what is trained: part of the identity
  if (opt.adversarial) {
    train::validate(*opt.adversarial, "finetune: adversarial");
    if (opt.adversarial_mode != "pgd" && opt.adversarial_mode != "freelb")
      throw ConfigError(fmt("finetune: adversarial mode '", opt.adversarial_mode, "': expected pgd or freelb"));
    extras += fmt("|", opt.adversarial_mode, " ", opt.adversarial->describe(), " x", opt.adversarial_weight);
  }
  if (opt.augment_text) extras += "|augmented";
  if (opt.counterfactual && opt.clp_weight > 0) extras += fmt("|clp ", opt.clp_weight);
  if (opt.clp_weight < 0) throw ConfigError(fmt("finetune: logit-pairing weight ", opt.clp_weight, ": expected >= 0"));
  ClassifyTask task(classifier, tok, data.train, label_index, opt, cfg.train.bias_update_speed,
                    fmt("classify|", model_dir, "|", data.name, "|", data.train.size(), "|", labels.size(), extras));
  FinetuneResult r;
  const auto t0 = std::chrono::steady_clock::now();
  r.epoch_losses = run_finetune(task, cfg, (sched.examples + opt.batch - 1) / opt.batch, "finetune");
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Predictions with their losses on both splits (error analysis mines the training ones), and the
  // majority-class baseline (the most frequent training label).
  backbone->eval();
  at::NoGradGuard ng;
  auto predict = [&](const std::vector<Example>& examples) {
    std::vector<Prediction> out;
    for (size_t b0 = 0; b0 < examples.size(); b0 += static_cast<size_t>(opt.batch)) {
      std::vector<const Example*> batch;
      for (size_t i = b0; i < std::min(examples.size(), b0 + static_cast<size_t>(opt.batch)); ++i) batch.push_back(&examples[i]);
      auto [x, mask] = encode_batch(tok, batch, opt.max_len, pad);
      const at::Tensor logp = at::log_softmax(head(pooled(backbone, x, mask)), -1).contiguous();
      const at::Tensor am = logp.argmax(-1).contiguous();
      const auto lp = logp.accessor<float, 2>();
      const auto best = am.accessor<int64_t, 1>();
      for (size_t i = 0; i < batch.size(); ++i) {
        const auto row = static_cast<int64_t>(i);
        auto it = label_index.find(batch[i]->label);
        // A label the training split never showed has no logit: its loss is infinite.
        const double loss = it == label_index.end() ? INFINITY : -static_cast<double>(lp[row][it->second]);
        out.push_back({labels[static_cast<size_t>(best[row])], loss});
      }
    }
    return out;
  };
  r.test_predictions = predict(data.test);
  std::vector<std::string> pred, gold;
  for (size_t i = 0; i < data.test.size(); ++i) {
    pred.push_back(r.test_predictions[i].label);
    gold.push_back(data.test[i].label);
  }
  std::map<std::string, int64_t> freq;
  for (const auto& e : data.train) ++freq[e.label];
  r.majority_label = std::max_element(freq.begin(), freq.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
  r.model = eval::classification_report(pred, gold);
  r.majority = eval::classification_report(std::vector<std::string>(gold.size(), r.majority_label), gold);

  if (!out_dir.empty()) {
    save_text_classifier(out_dir, *classifier, model_dir, labels, opt.max_len);
    write_file_atomic(path_join(out_dir, "finetune.json"), finetune_json(data, r) + "\n");
    write_file_atomic(path_join(out_dir, "predictions.tsv"), predictions_tsv(data.test, r.test_predictions));
    write_file_atomic(path_join(out_dir, "train_predictions.tsv"), predictions_tsv(data.train, predict(data.train)));
    // TensorBoard: loss per epoch, accuracy and per-class F1 as scalars, the confusion matrix as a table.
    log::TensorBoardWriter tb(path_join(out_dir, "tb"));
    for (size_t e = 0; e < r.epoch_losses.size(); ++e) tb.add_scalar("finetune/train_loss", r.epoch_losses[e], static_cast<int64_t>(e + 1));
    const auto epochs = static_cast<int64_t>(r.epoch_losses.size());
    tb.add_scalar("finetune/accuracy", r.model.accuracy, epochs);
    tb.add_scalar("finetune/macro_f1", r.model.macro.fmeasure, epochs);
    for (size_t c = 0; c < r.model.labels.size(); ++c) tb.add_scalar("finetune/f1/" + r.model.labels[c], r.model.per_class[c].fmeasure, epochs);
    tb.add_text("finetune/confusion", confusion_markdown(r.model), epochs);
    tb.flush();
  }
  return r;
}

std::string predictions_tsv(const std::vector<Example>& examples, const std::vector<Prediction>& preds) {
  auto clean = [](std::string t) {
    for (char& ch : t)
      if (ch == '\t' || ch == '\n' || ch == '\r') ch = ' ';
    return t;
  };
  std::string out = "text\tgold\tpred\tloss\n";
  char loss[32];
  for (size_t i = 0; i < examples.size(); ++i) {
    std::snprintf(loss, sizeof loss, "%.6g", preds[i].loss);
    out += clean(examples[i].text) + "\t" + examples[i].label + "\t" + preds[i].label + "\t" + loss + "\n";
  }
  return out;
}

std::string confusion_markdown(const eval::ClassificationReport& c) {
  std::string md = "| gold \\ predicted |";
  for (const auto& l : c.labels) md += " " + l + " |";
  md += "\n|---|";
  for (size_t i = 0; i < c.labels.size(); ++i) md += "---:|";
  md += "\n";
  for (size_t g = 0; g < c.labels.size(); ++g) {
    md += "| " + c.labels[g] + " |";
    for (int64_t n : c.confusion[g]) md += " " + std::to_string(n) + " |";
    md += "\n";
  }
  return md;
}

std::string finetune_json(const ClassifyData& data, const FinetuneResult& r) {
  auto summary = [](const eval::ClassificationReport& c) {
    return nlohmann::ordered_json{{"accuracy", c.accuracy}, {"macro_f1", c.macro.fmeasure}, {"weighted_f1", c.weighted.fmeasure}};
  };
  nlohmann::ordered_json j = {{"task", data.name},
                              {"train_examples", data.train.size()},
                              {"test_examples", data.test.size()},
                              {"classes", r.model.labels.size()},
                              {"model", summary(r.model)},
                              {"baseline_majority", summary(r.majority)},
                              {"majority_label", r.majority_label},
                              {"epoch_train_loss", r.epoch_losses},
                              {"train_seconds", r.train_seconds}};
  nlohmann::ordered_json per_class = nlohmann::ordered_json::array();
  for (size_t c = 0; c < r.model.labels.size(); ++c)
    per_class.push_back({{"label", r.model.labels[c]}, {"precision", r.model.per_class[c].precision},
                         {"recall", r.model.per_class[c].recall}, {"f1", r.model.per_class[c].fmeasure},
                         {"support", r.model.support[c]}});
  j["per_class"] = per_class;
  j["confusion"] = {{"labels", r.model.labels}, {"matrix", r.model.confusion}};
  return j.dump(2);
}

std::string finetune_table(const FinetuneResult& r) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "                      accuracy  macro F1  weighted F1\n"
                "fine-tuned model      %8.4f  %8.4f  %11.4f\n"
                "majority class        %8.4f  %8.4f  %11.4f   (always '%s')\n",
                r.model.accuracy, r.model.macro.fmeasure, r.model.weighted.fmeasure, r.majority.accuracy,
                r.majority.macro.fmeasure, r.majority.weighted.fmeasure, r.majority_label.c_str());
  return buf;
}

}  // namespace dsforge::tasks
