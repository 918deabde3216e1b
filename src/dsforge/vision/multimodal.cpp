#include "dsforge/vision/multimodal.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/data/ingest.h"
#include "dsforge/eval/text_metrics.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/io.h"
#include "dsforge/tasks/finetune_run.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/train/task.h"
#include "dsforge/vision/images.h"
#include "dsforge/vision/models.h"
#include "dsforge/vision/train_image.h"

namespace dsforge::vision {

std::string number_words(int64_t n) {
  static const char* ones[] = {"zero",    "one",     "two",       "three",    "four",     "five",    "six",
                               "seven",   "eight",   "nine",      "ten",      "eleven",   "twelve",  "thirteen",
                               "fourteen", "fifteen", "sixteen",  "seventeen", "eighteen", "nineteen"};
  static const char* tens[] = {"", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"};
  if (n < 0 || n > 999) throw ConfigError(fmt("number_words: ", n, " is outside 0..999"));
  if (n < 20) return ones[n];
  if (n < 100) return std::string(tens[n / 10]) + (n % 10 ? std::string("-") + ones[n % 10] : "");
  return std::string(ones[n / 100]) + " hundred" + (n % 100 ? " and " + number_words(n % 100) : "");
}

const std::vector<std::string>& multimodal_questions() {
  static const std::vector<std::string> q = {"Q: what number is shown? A:", "Q: what is the sum of the digits? A:"};
  return q;
}

namespace {

// The image side of the model: encoder columns -> the language model's width, plus a position per column.
struct VisionPrefixImpl : torch::nn::Module {
  VisionPrefixImpl(const ImageModelConfig& ec, int64_t d_model) {
    encoder = register_module("encoder", make_image_model(ec));
    projector = register_module("projector", torch::nn::Linear(encoder->feature_dim(), d_model));
    at::NoGradGuard ng;
    columns = encoder->column_features(at::zeros({1, ec.channels, ec.height, ec.width})).size(1);
    prefix_pos = register_parameter("prefix_pos", at::zeros({1, columns, d_model}));
  }
  at::Tensor forward(const at::Tensor& x) { return projector(encoder->column_features(x)) + prefix_pos; }
  void init_weights(uint64_t seed) {
    encoder->init_weights(seed);
    at::NoGradGuard ng;
    auto gen = at::detail::createCPUGenerator(seed + 1);
    projector->weight.normal_(0.0, 0.02, gen);
    projector->bias.zero_();
    prefix_pos.normal_(0.0, 0.02, gen);
  }
  ImageClassifier encoder;
  torch::nn::Linear projector{nullptr};
  at::Tensor prefix_pos;
  int64_t columns = 0;
};

struct MultimodalImpl : torch::nn::Module {
  MultimodalImpl(model::CausalLm language_model, const ImageModelConfig& ec) {
    lm = register_module("lm", std::move(language_model));
    vision = register_module("vision", std::make_shared<VisionPrefixImpl>(ec, lm->config().hidden_size));
  }
  // Logits of the text positions [B, T, V] after the image prefix.
  at::Tensor text_logits(const at::Tensor& prefix, const at::Tensor& tokens) {
    const at::Tensor text = lm->embed(tokens);
    return lm->forward_embeddings(at::cat({prefix.to(text.scalar_type()), text}, 1)).narrow(1, prefix.size(1), tokens.size(1));
  }
  model::CausalLm lm{nullptr};
  std::shared_ptr<VisionPrefixImpl> vision;
};

// Pictures of `digits` digits side by side from `split`, the number they show and its digit sum.
struct Pictures {
  ImageDataset images;
  std::vector<int64_t> number, sum;
};

Pictures compose(const ImageDataset& split, int64_t count, int64_t digits, uint64_t seed) {
  for (size_t k = 0; k < split.classes.size(); ++k)
    if (split.classes[k] != std::to_string(k))
      throw DataError(fmt("multimodal: the image set's classes must be the digits 0..9 (class ", k, " is '", split.classes[k], "')"));
  if (split.size() < digits) throw DataError(fmt("multimodal: the split has ", split.size(), " images, fewer than ", digits));
  Pictures p;
  const int64_t C = split.channels, H = split.height, W = split.width, Wn = W * digits;
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> px(static_cast<size_t>(C * H * Wn));
  for (int64_t e = 0; e < count; ++e) {
    int64_t number = 0, sum = 0;
    std::string source;
    for (int64_t d = 0; d < digits; ++d) {
      const auto i = static_cast<int64_t>(rng() % static_cast<uint64_t>(split.size()));
      const int64_t label = split.labels[static_cast<size_t>(i)];
      number = number * 10 + label;
      sum += label;
      source += (d ? "+" : "") + (split.sources.empty() ? std::to_string(i) : split.sources[static_cast<size_t>(i)]);
      const uint8_t* src = split.image(i);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < H; ++y)
          std::copy(src + (c * H + y) * W, src + (c * H + y + 1) * W, px.data() + (c * H + y) * Wn + d * W);
    }
    p.images.add(px.data(), C, H, Wn, number, source);
    p.number.push_back(number);
    p.sum.push_back(sum);
  }
  p.images.classes = split.classes;
  p.images.mean = split.mean;
  p.images.stddev = split.stddev;
  return p;
}

// Example e asks question e % 2 about picture e.
std::string expected_answer(const Pictures& p, int64_t e) {
  return number_words(e % 2 == 0 ? p.number[static_cast<size_t>(e)] : p.sum[static_cast<size_t>(e)]);
}

class MultimodalTask : public train::TrainTask {
 public:
  MultimodalTask(std::shared_ptr<MultimodalImpl> m, const Pictures& pics, const tok::BpeTokenizer& tok, uint64_t seed, std::string identity,
                 std::string encoder_from)
      : m_(std::move(m)), pics_(pics), tok_(tok), identity_(std::move(identity)), encoder_from_(std::move(encoder_from)),
        stream_(pics.images.size(), seed) {
    for (const auto& q : multimodal_questions()) prompts_.push_back(tok_.encode(q, false));
  }
  torch::nn::Module& module() override { return *m_; }
  // The language model is pretrained; the encoder starts from encoder_from's matching tensors when given.
  void init_weights(double, uint64_t seed) override {
    m_->vision->init_weights(seed);
    if (encoder_from_.empty()) return;
    const std::string path = path_join(encoder_from_, "model.safetensors");
    const TensorMap from = load_safetensors(path).tensors;
    at::NoGradGuard ng;
    std::vector<std::string> loaded, skipped;
    for (auto& p : m_->vision->encoder->named_parameters()) {
      auto it = from.find(p.key());
      if (it != from.end() && it->second.sizes() == p.value().sizes()) {
        p.value().copy_(it->second);
        loaded.push_back(p.key());
      } else {
        skipped.push_back(p.key());
      }
    }
    for (auto& b : m_->vision->encoder->named_buffers()) {
      auto it = from.find(b.key());
      if (it != from.end() && it->second.sizes() == b.value().sizes()) b.value().copy_(it->second);
    }
    if (loaded.empty()) throw CheckpointError(fmt(path, ": no tensor fits the ", m_->vision->encoder->config().arch, " encoder"));
    std::string names;
    for (const auto& k : skipped) names += (names.empty() ? "" : ", ") + k;
    log_info("multimodal: encoder starts from ", encoder_from_, " (", loaded.size(), " tensors; fresh: ", names.empty() ? "none" : names, ")");
  }
  std::string describe() const override {
    int64_t trainable = 0;
    for (const auto& p : m_->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
    return fmt("multimodal: ", m_->vision->encoder->config().arch, " encoder, ", m_->vision->columns, " image tokens, ", trainable,
               " trainable of ", model::count_parameters(*m_), " parameters, ", pics_.images.size(), " pictures");
  }
  std::string config_json() const override { return to_json(m_->vision->encoder->config()).dump(); }
  std::string identity() const override { return identity_; }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t, c10::Device device) override {
    const std::vector<int64_t> idx = stream_.next(rows, first, count);
    std::vector<std::vector<int32_t>> text;
    std::vector<size_t> prompt_len;
    size_t T = 0;
    for (const int64_t e : idx) {
      std::vector<int32_t> t = prompts_[static_cast<size_t>(e % 2)];
      prompt_len.push_back(t.size());
      for (const int32_t id : tok_.encode(" " + expected_answer(pics_, e), false)) t.push_back(id);
      t.push_back(tok_.eot_id());
      T = std::max(T, t.size());
      text.push_back(std::move(t));
    }
    at::Tensor tokens = at::zeros({static_cast<int64_t>(idx.size()), static_cast<int64_t>(T)}, at::kLong);
    at::Tensor target = at::full({static_cast<int64_t>(idx.size()), static_cast<int64_t>(T)}, -100, at::kLong);
    for (size_t k = 0; k < text.size(); ++k)
      for (size_t j = 0; j < text[k].size(); ++j) {
        tokens[static_cast<int64_t>(k)][static_cast<int64_t>(j)] = text[k][j];
        if (j + 1 >= prompt_len[k] && j + 1 < text[k].size())  // position j predicts token j + 1 of the answer
          target[static_cast<int64_t>(k)][static_cast<int64_t>(j)] = text[k][j + 1];
      }
    at::Tensor x = image_batch(pics_.images, idx).to(device);
    at::Tensor logits = m_->text_logits(m_->vision->forward(x), tokens.to(device)).to(at::kFloat);
    at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}), target.view({-1}).to(device));
    return {loss, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }
  int64_t tokens_per_row() const override { return 1; }

 private:
  std::shared_ptr<MultimodalImpl> m_;
  const Pictures& pics_;
  const tok::BpeTokenizer& tok_;
  std::string identity_, encoder_from_;
  tasks::ExampleStream stream_;
  std::vector<std::vector<int32_t>> prompts_;
};

// Greedy answers to one prompt about each image of x [n, C, H, W] (normalised).
std::vector<std::string> greedy_answers(MultimodalImpl& m, const tok::BpeTokenizer& tok, const at::Tensor& x, const std::string& prompt,
                                        int64_t max_new_tokens) {
  at::NoGradGuard ng;
  const bool was_training = m.is_training();
  m.eval();
  const int64_t n = x.size(0);
  const std::vector<int32_t> p = tok.encode(prompt, false);
  if (p.empty()) throw ConfigError(fmt("multimodal: prompt '", prompt, "' encodes to no tokens"));
  const int64_t room = m.lm->config().max_position_embeddings - m.vision->columns - static_cast<int64_t>(p.size());
  if (room < 1) throw ConfigError(fmt("multimodal: ", m.vision->columns, " image tokens and a ", p.size(), "-token prompt leave no room in max_position_embeddings ", m.lm->config().max_position_embeddings));
  max_new_tokens = std::min(max_new_tokens, room);
  at::Tensor tokens = at::tensor(std::vector<int64_t>(p.begin(), p.end()), at::kLong).unsqueeze(0).repeat({n, 1});
  const at::Tensor prefix = m.vision->forward(x);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
  std::vector<bool> done(static_cast<size_t>(n), false);
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    const at::Tensor next = m.text_logits(prefix, tokens).select(1, tokens.size(1) - 1).argmax(1).contiguous();
    bool all = true;
    for (int64_t i = 0; i < n; ++i) {
      const auto id = static_cast<int32_t>(next[i].item<int64_t>());
      if (!done[static_cast<size_t>(i)]) {
        if (id == tok.eot_id()) done[static_cast<size_t>(i)] = true;
        else out[static_cast<size_t>(i)].push_back(id);
      }
      all = all && done[static_cast<size_t>(i)];
    }
    if (all) break;
    tokens = at::cat({tokens, next.unsqueeze(1)}, 1);
  }
  if (was_training) m.train();
  std::vector<std::string> answers;
  for (const auto& ids : out) {
    std::string s = data::repair_utf8(tok.decode(ids));  // a byte-level model may stop inside a character
    const size_t a = s.find_first_not_of(' '), b = s.find_last_not_of(' ');
    answers.push_back(a == std::string::npos ? "" : s.substr(a, b - a + 1));
  }
  return answers;
}

struct LoadedMultimodal {
  std::shared_ptr<MultimodalImpl> model;
  tok::BpeTokenizer tok;
  nlohmann::json config;
};

LoadedMultimodal load_multimodal(const std::string& dir) {
  const std::string path = path_join(dir, "config.json");
  if (!file_exists(path)) throw IoError(fmt(dir, ": no config.json (a folder written by `dsforge multimodal train`?)"));
  LoadedMultimodal m;
  m.config = nlohmann::json::parse(read_file(path));
  if (m.config.value("model_type", "") != "multimodal_lm")
    throw ConfigError(fmt(path, ": model_type is '", m.config.value("model_type", ""), "'; --image needs a multimodal folder (dsforge multimodal train)"));
  m.model = std::make_shared<MultimodalImpl>(model::load_pretrained(path_join(dir, "lm")),
                                             image_model_config_from_json(m.config.at("encoder"), path));
  const std::string weights = path_join(dir, "vision.safetensors");
  model::load_model_state(*m.model->vision, load_safetensors(weights).tensors, weights);
  m.tok = tok::BpeTokenizer::load(path_join(dir, "lm/tokenizer.json"));
  m.model->eval();
  return m;
}

}  // namespace

MultimodalResult train_multimodal(const std::string& lm_dir, const std::string& data_dir, const std::string& out_dir,
                                  const MultimodalOptions& opt) {
  if (opt.digits < 1 || opt.digits > 3) throw ConfigError(fmt("multimodal: --digits ", opt.digits, ": expected 1, 2 or 3"));
  if (opt.train_examples < 1 || opt.test_examples < 1) throw ConfigError("multimodal: --train-examples and --test-examples must be positive");
  if (out_dir.empty()) throw ConfigError("multimodal: --out is required");
  model::CausalLm lm = model::load_pretrained(lm_dir);
  if (!lm->config().is_deepseek())
    throw ConfigError(fmt(lm_dir, ": model_type '", lm->config().model_type, "'; the multimodal prefix needs a DeepSeek-V3 language model"));
  const tok::BpeTokenizer tok = tok::BpeTokenizer::load(path_join(lm_dir, "tokenizer.json"));
  if (tok.eot_id() < 0) throw ConfigError(fmt(lm_dir, "/tokenizer.json: no end-of-text special token to end answers with"));
  const nlohmann::json info = read_dataset_info(data_dir);
  const std::string held = held_out_split(info, data_dir);
  const Pictures train = compose(load_image_split(data_dir, "train"), opt.train_examples, opt.digits, opt.seed * 7 + 1);
  const Pictures test = compose(load_image_split(data_dir, held), opt.test_examples, opt.digits, opt.seed * 7 + 2);

  const ImageModelConfig ec = default_image_model(opt.encoder, train.images.channels, train.images.height, train.images.width, 10);
  auto m = std::make_shared<MultimodalImpl>(lm, ec);
  if (opt.freeze_lm)
    for (auto& p : m->lm->parameters()) p.set_requires_grad(false);
  MultimodalResult r;
  r.freeze_lm = opt.freeze_lm;
  r.prefix_tokens = m->vision->columns;
  r.train_examples = opt.train_examples;
  r.held_out = opt.test_examples;
  for (const auto& p : m->parameters()) {
    r.total_parameters += p.numel();
    r.trainable_parameters += p.requires_grad() ? p.numel() : 0;
  }
  tasks::FinetuneSchedule sched = tasks::finetune_schedule(opt.train_examples, opt);
  RunConfig cfg = tasks::finetune_run_config(sched, opt.overrides, out_dir);
  MultimodalTask task(m, train, tok, opt.seed + 1,
                      fmt("multimodal|", lm_dir, "|", data_dir, "|", opt.encoder, "|", opt.freeze_lm, "|", opt.digits, "|", opt.train_examples, "|",
                          opt.encoder_from),
                      opt.encoder_from);
  const auto t0 = std::chrono::steady_clock::now();
  r.epoch_losses = tasks::run_finetune(task, cfg, (opt.train_examples + opt.batch - 1) / opt.batch, "multimodal");
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Held-out answers, grouped by question (one prompt length per batch).
  std::vector<std::string> answers(static_cast<size_t>(opt.test_examples)), expected;
  const auto& questions = multimodal_questions();
  for (size_t q = 0; q < questions.size(); ++q) {
    std::vector<int64_t> idx;
    for (int64_t e = static_cast<int64_t>(q); e < opt.test_examples; e += static_cast<int64_t>(questions.size())) idx.push_back(e);
    for (size_t first = 0; first < idx.size(); first += 128) {
      const std::vector<int64_t> part(idx.begin() + static_cast<std::ptrdiff_t>(first),
                                      idx.begin() + static_cast<std::ptrdiff_t>(std::min(idx.size(), first + 128)));
      const auto a = greedy_answers(*m, tok, image_batch(test.images, part), questions[q], 8);
      for (size_t k = 0; k < part.size(); ++k) answers[static_cast<size_t>(part[k])] = a[k];
    }
  }
  std::vector<int64_t> right(questions.size(), 0), asked(questions.size(), 0);
  int64_t correct = 0;
  for (int64_t e = 0; e < opt.test_examples; ++e) {
    expected.push_back(expected_answer(test, e));
    const bool ok = answers[static_cast<size_t>(e)] == expected.back();
    correct += ok;
    right[static_cast<size_t>(e % 2)] += ok;
    ++asked[static_cast<size_t>(e % 2)];
    if (r.samples.size() < 12) r.samples.push_back({questions[static_cast<size_t>(e % 2)], expected.back(), answers[static_cast<size_t>(e)], ok});
  }
  r.exact_match = static_cast<double>(correct) / static_cast<double>(opt.test_examples);
  for (size_t q = 0; q < questions.size(); ++q) r.exact_match_by_question.push_back(asked[q] ? static_cast<double>(right[q]) / static_cast<double>(asked[q]) : 0.0);
  r.bleu = eval::corpus_bleu(answers, {expected}).score;
  r.chrf = eval::corpus_chrf(answers, {expected}).score;

  // The model folder: the language model (tuned or not) with its tokenizer, the image side, the config.
  const std::string stage = path_join(out_dir, "model.partial"), dir = path_join(out_dir, "model");
  remove_all(stage);
  make_dirs(stage);
  model::save_pretrained(path_join(stage, "lm"), *m->lm);
  model::copy_companion_files(lm_dir, path_join(stage, "lm"));
  save_safetensors(path_join(stage, "vision.safetensors"), model::model_state(*m->vision), {{"format", "pt"}});
  const nlohmann::ordered_json config = {{"model_type", "multimodal_lm"},
                                         {"encoder", to_json(ec)},
                                         {"prefix_tokens", r.prefix_tokens},
                                         {"mean", train.images.mean},
                                         {"std", train.images.stddev},
                                         {"digits", opt.digits},
                                         {"questions", questions},
                                         {"freeze_lm", opt.freeze_lm},
                                         {"encoder_from", opt.encoder_from},
                                         {"lm_source", lm_dir}};
  write_file_atomic(path_join(stage, "config.json"), config.dump(2) + "\n");
  replace_dir(stage, dir, "multimodal model");
  // Held-out pictures to ask about (`dsforge generate --image`), with what they show.
  if (opt.write_examples > 0) {
    const std::string ex = path_join(out_dir, "examples");
    make_dirs(ex);
    std::string tsv = "file\tquestion\texpected\n";
    for (int64_t e = 0; e < std::min(opt.write_examples, opt.test_examples); ++e) {
      const std::string name = fmt("heldout_", e, ".png");
      write_file_atomic(path_join(ex, name), png_grid({test.images.image(e)}, test.images.channels, test.images.height, test.images.width, 1, 1));
      tsv += fmt(name, "\t", questions[static_cast<size_t>(e % 2)], "\t", expected[static_cast<size_t>(e)], "\n");
    }
    write_file_atomic(path_join(ex, "examples.tsv"), tsv);
  }
  write_file_atomic(path_join(out_dir, "multimodal.json"), multimodal_json(r).dump(2) + "\n");
  return r;
}

nlohmann::ordered_json multimodal_json(const MultimodalResult& r) {
  nlohmann::ordered_json samples = nlohmann::ordered_json::array();
  for (const auto& s : r.samples)
    samples.push_back({{"question", s.question}, {"expected", s.expected}, {"answer", s.answer}, {"correct", s.correct}});
  return {{"exact_match", r.exact_match},
          {"exact_match_by_question", r.exact_match_by_question},
          {"bleu", r.bleu},
          {"chrf", r.chrf},
          {"held_out", r.held_out},
          {"train_examples", r.train_examples},
          {"freeze_lm", r.freeze_lm},
          {"prefix_tokens", r.prefix_tokens},
          {"trainable_parameters", r.trainable_parameters},
          {"total_parameters", r.total_parameters},
          {"train_seconds", r.train_seconds},
          {"epoch_losses", r.epoch_losses},
          {"samples", samples}};
}

std::string answer_about_image(const std::string& model_dir, const std::string& image_file, const std::string& prompt,
                               int64_t max_new_tokens) {
  LoadedMultimodal m = load_multimodal(model_dir);
  const ImageModelConfig ec = image_model_config_from_json(m.config.at("encoder"), model_dir + "/config.json");
  RawImages one;
  one.images.push_back(read_image_file(image_file));
  StandardiseOptions so;
  so.grayscale = ec.channels == 1;
  so.height = ec.height;
  so.width = ec.width;
  ImageDataset d = standardise(std::move(one), so);
  if (d.channels != ec.channels) throw DataError(fmt(image_file, ": ", d.channels, " channels; the model takes ", ec.channels));
  d.mean = m.config.at("mean").get<std::vector<double>>();
  d.stddev = m.config.at("std").get<std::vector<double>>();
  return greedy_answers(*m.model, m.tok, image_batch(d, {0}), prompt, max_new_tokens).at(0);
}

}  // namespace dsforge::vision
