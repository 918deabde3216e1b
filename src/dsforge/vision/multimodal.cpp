#include "dsforge/vision/multimodal.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <chrono>
#include <cmath>
#include <numeric>
#include <optional>
#include <random>

#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/models.h"
#include "dsforge/audio/prepare.h"
#include "dsforge/audio/train_audio.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/data/corpus.h"
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

const std::vector<std::string>& multimodal_questions(const std::string& task) {
  static const std::vector<std::string> digits = {"Q: what number is shown? A:", "Q: what is the sum of the digits? A:"};
  static const std::vector<std::string> spoken = {"Q: which word is spoken? A:", "Q: what does the spoken word mean? A:"};
  static const std::vector<std::string> pair = {"Q: do the shown and the spoken digit match? A:",
                                                "Q: what is the sum of the shown and the spoken digit? A:"};
  if (task == "digits") return digits;
  if (task == "spoken") return spoken;
  if (task == "digit-pair") return pair;
  throw ConfigError(fmt("multimodal: task '", task, "': expected digits, spoken or digit-pair"));
}

namespace {

// Prefix tokens from an encoder's feature sequence [B, tokens, feature_dim]: projected to the language
// model's width, plus a learned position per token.
template <typename Encoder>
struct PrefixImpl : torch::nn::Module {
  PrefixImpl(Encoder enc, int64_t feature_dim, int64_t tokens, int64_t d_model) : tokens(tokens) {
    encoder = register_module("encoder", std::move(enc));
    projector = register_module("projector", torch::nn::Linear(feature_dim, d_model));
    prefix_pos = register_parameter("prefix_pos", at::zeros({1, tokens, d_model}));
  }
  void init_weights(uint64_t seed) {
    encoder->init_weights(seed);
    at::NoGradGuard ng;
    auto gen = at::detail::createCPUGenerator(seed + 1);
    projector->weight.normal_(0.0, 0.02, gen);
    projector->bias.zero_();
    prefix_pos.normal_(0.0, 0.02, gen);
  }
  Encoder encoder;
  torch::nn::Linear projector{nullptr};
  at::Tensor prefix_pos;
  int64_t tokens = 0;
};

// Images: one token per column band of the encoder's last feature map.
struct VisionPrefixImpl : PrefixImpl<ImageClassifier> {
  VisionPrefixImpl(const ImageModelConfig& ec, int64_t d_model) : VisionPrefixImpl(make_image_model(ec), d_model) {}
  at::Tensor forward(const at::Tensor& x) { return projector(encoder->column_features(x)) + prefix_pos; }

 private:
  VisionPrefixImpl(const ImageClassifier& enc, int64_t d_model) : PrefixImpl(enc, enc->feature_dim(), columns(*enc), d_model) {}
  static int64_t columns(ImageClassifierImpl& enc) {
    at::NoGradGuard ng;
    const ImageModelConfig& c = enc.config();
    return enc.column_features(at::zeros({1, c.channels, c.height, c.width})).size(1);
  }
};

// Audio: one token per window of token_frames feature frames.
struct AudioPrefixImpl : PrefixImpl<audio::AudioClassifier> {
  AudioPrefixImpl(const audio::AudioModelConfig& ac, int64_t d_model) : AudioPrefixImpl(audio::make_audio_model(ac), d_model) {}
  at::Tensor forward(const at::Tensor& x) { return projector(encoder->sequence_features(x)) + prefix_pos; }

 private:
  AudioPrefixImpl(const audio::AudioClassifier& enc, int64_t d_model) : PrefixImpl(enc, enc->feature_dim(), windows(*enc), d_model) {}
  static int64_t windows(audio::AudioClassifierImpl& enc) {
    at::NoGradGuard ng;
    const audio::AudioModelConfig& c = enc.config();
    return enc.sequence_features(at::zeros({1, c.rows(), c.frames()})).size(1);
  }
};

struct MultimodalImpl : torch::nn::Module {
  MultimodalImpl(model::CausalLm language_model, const std::optional<ImageModelConfig>& ec, const std::optional<audio::AudioModelConfig>& ac) {
    lm = register_module("lm", std::move(language_model));
    if (ec) vision = register_module("vision", std::make_shared<VisionPrefixImpl>(*ec, lm->config().hidden_size));
    if (ac) audio = register_module("audio", std::make_shared<AudioPrefixImpl>(*ac, lm->config().hidden_size));
  }
  int64_t prefix_tokens() const { return (vision ? vision->tokens : 0) + (audio ? audio->tokens : 0); }
  // The prefix [B, tokens, d_model]: image tokens, then audio tokens (an undefined input for an absent side).
  at::Tensor prefix(const at::Tensor& images, const at::Tensor& features) {
    std::vector<at::Tensor> parts;
    if (vision) parts.push_back(vision->forward(images));
    if (audio) parts.push_back(audio->forward(features));
    return at::cat(parts, 1);
  }
  // Logits of the text positions [B, T, V] after the prefix.
  at::Tensor text_logits(const at::Tensor& prefix, const at::Tensor& tokens) {
    const at::Tensor text = lm->embed(tokens);
    return lm->forward_embeddings(at::cat({prefix.to(text.scalar_type()), text}, 1)).narrow(1, prefix.size(1), tokens.size(1));
  }
  model::CausalLm lm{nullptr};
  std::shared_ptr<VisionPrefixImpl> vision;
  std::shared_ptr<AudioPrefixImpl> audio;
};

// Copies into `dst` the tensors of a saved classifier whose names and shapes match; returns how many.
int64_t load_matching(torch::nn::Module& dst, const std::string& model_dir, const std::string& what) {
  const std::string path = path_join(model_dir, "model.safetensors");
  const TensorMap from = load_safetensors(path).tensors;
  at::NoGradGuard ng;
  std::vector<std::string> loaded, skipped;
  for (auto& p : dst.named_parameters()) {
    auto it = from.find(p.key());
    if (it != from.end() && it->second.sizes() == p.value().sizes()) {
      p.value().copy_(it->second);
      loaded.push_back(p.key());
    } else {
      skipped.push_back(p.key());
    }
  }
  for (auto& b : dst.named_buffers()) {
    auto it = from.find(b.key());
    if (it != from.end() && it->second.sizes() == b.value().sizes()) b.value().copy_(it->second);
  }
  if (loaded.empty()) throw CheckpointError(fmt(path, ": no tensor fits the ", what));
  std::string names;
  for (const auto& k : skipped) names += (names.empty() ? "" : ", ") + k;
  log_info("multimodal: the ", what, " starts from ", model_dir, " (", loaded.size(), " tensors; fresh: ", names.empty() ? "none" : names, ")");
  return static_cast<int64_t>(loaded.size());
}

// Pictures of `digits` digits side by side from `split`, the number they show and its digit sum.
struct Pictures {
  ImageDataset images;
  std::vector<int64_t> number, sum;
};

void require_digit_classes(const ImageDataset& split) {
  for (size_t k = 0; k < split.classes.size(); ++k)
    if (split.classes[k] != std::to_string(k))
      throw DataError(fmt("multimodal: the image set's classes must be the digits 0..9 (class ", k, " is '", split.classes[k], "')"));
}

Pictures compose(const ImageDataset& split, int64_t count, int64_t digits, uint64_t seed) {
  require_digit_classes(split);
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

// One question about one picture and/or one clip, and its answer.
struct Example {
  int64_t image = -1, clip = -1;  // into Examples::images / Examples::audio
  size_t question = 0;
  std::string answer;
};
struct Examples {
  ImageDataset images;  // pictures (digits), single digits (digit-pair) or none (spoken)
  audio::AudioSplit audio;
  std::vector<Example> items;
};

// Example e asks question e % 2 about picture e.
Examples digits_examples(const ImageDataset& split, int64_t count, int64_t digits, uint64_t seed) {
  Pictures p = compose(split, count, digits, seed);
  Examples x;
  for (int64_t e = 0; e < count; ++e)
    x.items.push_back({e, -1, static_cast<size_t>(e % 2),
                       number_words(e % 2 == 0 ? p.number[static_cast<size_t>(e)] : p.sum[static_cast<size_t>(e)])});
  x.images = std::move(p.images);
  return x;
}

// Clip e % n of a seeded order (every clip once before any twice), question e % 2.
Examples spoken_examples(audio::AudioSplit split, int64_t count, const std::map<std::string, std::string>& definitions, uint64_t seed) {
  if (split.size() == 0) throw DataError("multimodal: the audio split has no clips");
  std::vector<int64_t> order(static_cast<size_t>(split.size()));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  Examples x;
  for (int64_t e = 0; e < count; ++e) {
    const int64_t clip = order[static_cast<size_t>(e % split.size())];
    const std::string& word = split.classes[static_cast<size_t>(split.labels[static_cast<size_t>(clip)])];
    x.items.push_back({-1, clip, static_cast<size_t>(e % 2), e % 2 == 0 ? word : definitions.at(word)});
  }
  x.audio = std::move(split);
  return x;
}

// A digit picture and a spoken digit: for the match question the clip says the pictured digit half the
// time, otherwise (and for the sum) any digit.
Examples digit_pair_examples(const ImageDataset& images, audio::AudioSplit clips, int64_t count, uint64_t seed) {
  require_digit_classes(images);
  std::vector<std::vector<int64_t>> clips_of(10), images_of(10);
  for (int64_t d = 0; d < 10; ++d) {
    const auto it = std::find(clips.classes.begin(), clips.classes.end(), number_words(d));
    if (it == clips.classes.end())
      throw DataError(fmt("multimodal: the audio set has no class '", number_words(d), "' (digit-pair needs the spoken digits zero..nine)"));
    const auto label = static_cast<int64_t>(it - clips.classes.begin());
    for (int64_t i = 0; i < clips.size(); ++i)
      if (clips.labels[static_cast<size_t>(i)] == label) clips_of[static_cast<size_t>(d)].push_back(i);
  }
  for (int64_t i = 0; i < images.size(); ++i) images_of[static_cast<size_t>(images.labels[static_cast<size_t>(i)])].push_back(i);
  for (int64_t d = 0; d < 10; ++d)
    if (clips_of[static_cast<size_t>(d)].empty() || images_of[static_cast<size_t>(d)].empty())
      throw DataError(fmt("multimodal: no ", clips_of[static_cast<size_t>(d)].empty() ? "clip" : "picture", " of the digit ", d));
  SplitMix64 rng(seed);
  Examples x;
  for (int64_t e = 0; e < count; ++e) {
    const auto a = static_cast<int64_t>(rng.below(10));
    int64_t b = static_cast<int64_t>(rng.below(10));
    if (e % 2 == 0) b = rng.below(2) ? a : (a + 1 + static_cast<int64_t>(rng.below(9))) % 10;
    const auto& ia = images_of[static_cast<size_t>(a)];
    const auto& cb = clips_of[static_cast<size_t>(b)];
    x.items.push_back({ia[rng.below(ia.size())], cb[rng.below(cb.size())], static_cast<size_t>(e % 2),
                       e % 2 == 0 ? (a == b ? "yes" : "no") : number_words(a + b)});
  }
  x.images = images;
  x.audio = std::move(clips);
  return x;
}

// The inputs of examples `idx` as the model reads them: normalised pictures and audio features (an
// undefined tensor for a side the model has not).
std::pair<at::Tensor, at::Tensor> example_inputs(const MultimodalImpl& m, const Examples& x, const audio::AudioFeaturizer* featurizer,
                                                 const std::vector<int64_t>& idx) {
  at::Tensor images, features;
  if (m.vision) {
    std::vector<int64_t> pics;
    for (const int64_t e : idx) pics.push_back(x.items[static_cast<size_t>(e)].image);
    images = image_batch(x.images, pics);
  }
  if (m.audio) {
    std::vector<int64_t> clips;
    for (const int64_t e : idx) clips.push_back(x.items[static_cast<size_t>(e)].clip);
    features = featurizer->batch(x.audio, clips);
  }
  return {images, features};
}

class MultimodalTask : public train::TrainTask {
 public:
  MultimodalTask(std::shared_ptr<MultimodalImpl> m, const Examples& x, const audio::AudioFeaturizer* featurizer,
                 const std::vector<std::string>& questions, const tok::BpeTokenizer& tok, uint64_t seed, std::string identity,
                 std::string encoder_from, std::string audio_encoder_from)
      : m_(std::move(m)), x_(x), featurizer_(featurizer), tok_(tok), identity_(std::move(identity)), encoder_from_(std::move(encoder_from)),
        audio_encoder_from_(std::move(audio_encoder_from)), stream_(static_cast<int64_t>(x.items.size()), seed) {
    for (const auto& q : questions) prompts_.push_back(tok_.encode(q, false));
  }
  torch::nn::Module& module() override { return *m_; }
  // The language model is pretrained; an encoder starts from a trained classifier's matching tensors when given.
  void init_weights(double, uint64_t seed) override {
    if (m_->vision) {
      m_->vision->init_weights(seed);
      if (!encoder_from_.empty()) load_matching(*m_->vision->encoder, encoder_from_, m_->vision->encoder->config().arch + " image encoder");
    }
    if (m_->audio) {
      m_->audio->init_weights(seed + 2);
      if (!audio_encoder_from_.empty())
        load_matching(*m_->audio->encoder, audio_encoder_from_, m_->audio->encoder->config().arch + " audio encoder");
    }
  }
  std::string describe() const override {
    int64_t trainable = 0;
    for (const auto& p : m_->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
    std::string sides;
    if (m_->vision) sides += fmt(m_->vision->encoder->config().arch, " image encoder (", m_->vision->tokens, " tokens)");
    if (m_->audio) sides += fmt(sides.empty() ? "" : " + ", m_->audio->encoder->config().arch, " audio encoder (", m_->audio->tokens, " tokens)");
    return fmt("multimodal: ", sides, ", ", trainable, " trainable of ", model::count_parameters(*m_), " parameters, ", x_.items.size(),
               " examples");
  }
  std::string config_json() const override {
    nlohmann::json j = nlohmann::json::object();
    if (m_->vision) j["encoder"] = to_json(m_->vision->encoder->config());
    if (m_->audio) j["audio_encoder"] = audio::to_json(m_->audio->encoder->config());
    return j.dump();
  }
  std::string identity() const override { return identity_; }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t, c10::Device device) override {
    const std::vector<int64_t> idx = stream_.next(rows, first, count);
    std::vector<std::vector<int32_t>> text;
    std::vector<size_t> prompt_len;
    size_t T = 0;
    for (const int64_t e : idx) {
      const Example& ex = x_.items[static_cast<size_t>(e)];
      std::vector<int32_t> t = prompts_[ex.question];
      prompt_len.push_back(t.size());
      for (const int32_t id : tok_.encode(" " + ex.answer, false)) t.push_back(id);
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
    auto [images, features] = example_inputs(*m_, x_, featurizer_, idx);
    const at::Tensor prefix = m_->prefix(images.defined() ? images.to(device) : images, features.defined() ? features.to(device) : features);
    at::Tensor logits = m_->text_logits(prefix, tokens.to(device)).to(at::kFloat);
    at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}), target.view({-1}).to(device));
    return {loss, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }
  int64_t tokens_per_row() const override { return 1; }

 private:
  std::shared_ptr<MultimodalImpl> m_;
  const Examples& x_;
  const audio::AudioFeaturizer* featurizer_;
  const tok::BpeTokenizer& tok_;
  std::string identity_, encoder_from_, audio_encoder_from_;
  tasks::ExampleStream stream_;
  std::vector<std::vector<int32_t>> prompts_;
};

// Greedy answers to one prompt after each row of `prefix` [n, tokens, d_model].
std::vector<std::string> greedy_answers(MultimodalImpl& m, const tok::BpeTokenizer& tok, const at::Tensor& prefix, const std::string& prompt,
                                        int64_t max_new_tokens) {
  at::NoGradGuard ng;
  const bool was_training = m.is_training();
  m.eval();
  const int64_t n = prefix.size(0);
  const std::vector<int32_t> p = tok.encode(prompt, false);
  if (p.empty()) throw ConfigError(fmt("multimodal: prompt '", prompt, "' encodes to no tokens"));
  const int64_t room = m.lm->config().max_position_embeddings - prefix.size(1) - static_cast<int64_t>(p.size());
  if (room < 1)
    throw ConfigError(fmt("multimodal: ", prefix.size(1), " prefix tokens and a ", p.size(), "-token prompt leave no room in max_position_embeddings ",
                          m.lm->config().max_position_embeddings));
  max_new_tokens = std::min(max_new_tokens, room);
  at::Tensor tokens = at::tensor(std::vector<int64_t>(p.begin(), p.end()), at::kLong).unsqueeze(0).repeat({n, 1}).to(prefix.device());
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
  std::vector<bool> done(static_cast<size_t>(n), false);
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    const at::Tensor next = m.text_logits(prefix, tokens).select(1, tokens.size(1) - 1).argmax(1).contiguous();
    const at::Tensor ids = next.cpu();
    bool all = true;
    for (int64_t i = 0; i < n; ++i) {
      const auto id = static_cast<int32_t>(ids[i].item<int64_t>());
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
  std::shared_ptr<audio::AudioFeaturizer> featurizer;
  tok::BpeTokenizer tok;
  nlohmann::json config;
};

LoadedMultimodal load_multimodal(const std::string& dir) {
  const std::string path = path_join(dir, "config.json");
  if (!file_exists(path)) throw IoError(fmt(dir, ": no config.json (a folder written by `dsforge multimodal train`?)"));
  LoadedMultimodal m;
  m.config = nlohmann::json::parse(read_file(path));
  if (m.config.value("model_type", "") != "multimodal_lm")
    throw ConfigError(fmt(path, ": model_type is '", m.config.value("model_type", ""), "'; --image and --audio need a multimodal folder (dsforge multimodal train)"));
  std::optional<ImageModelConfig> ec;
  std::optional<audio::AudioModelConfig> ac;
  if (m.config.contains("encoder")) ec = image_model_config_from_json(m.config.at("encoder"), path);
  if (m.config.contains("audio_encoder")) {
    ac = audio::audio_model_config_from_json(m.config.at("audio_encoder"), path);
    m.featurizer = std::make_shared<audio::AudioFeaturizer>(*ac, m.config.at("audio_mean").get<std::vector<double>>(),
                                                            m.config.at("audio_std").get<std::vector<double>>());
  }
  m.model = std::make_shared<MultimodalImpl>(model::load_pretrained(path_join(dir, "lm")), ec, ac);
  if (m.model->vision) {
    const std::string weights = path_join(dir, "vision.safetensors");
    model::load_model_state(*m.model->vision, load_safetensors(weights).tensors, weights);
  }
  if (m.model->audio) {
    const std::string weights = path_join(dir, "audio.safetensors");
    model::load_model_state(*m.model->audio, load_safetensors(weights).tensors, weights);
  }
  m.tok = tok::BpeTokenizer::load(path_join(dir, "lm/tokenizer.json"));
  m.model->eval();
  return m;
}

}  // namespace

MultimodalResult train_multimodal(const std::string& lm_dir, const std::string& data_dir, const std::string& out_dir,
                                  const MultimodalOptions& opt) {
  const std::vector<std::string>& questions = multimodal_questions(opt.task);
  if (opt.inputs != "all" && opt.inputs != "image" && opt.inputs != "audio")
    throw ConfigError(fmt("multimodal: --inputs '", opt.inputs, "': expected all, image or audio"));
  const bool task_image = opt.task != "spoken", task_audio = opt.task != "digits";
  const bool use_image = task_image && opt.inputs != "audio", use_audio = task_audio && opt.inputs != "image";
  if (!use_image && !use_audio)
    throw ConfigError(fmt("multimodal: the ", opt.task, " task has no ", opt.inputs, " input (its inputs: ",
                          task_image && task_audio ? "image and audio" : task_image ? "image" : "audio", ")"));
  if (opt.task == "digits" && (opt.digits < 1 || opt.digits > 3)) throw ConfigError(fmt("multimodal: --digits ", opt.digits, ": expected 1, 2 or 3"));
  if (opt.train_examples < 1 || opt.test_examples < 1) throw ConfigError("multimodal: --train-examples and --test-examples must be positive");
  if (out_dir.empty()) throw ConfigError("multimodal: --out is required");
  if (task_image && data_dir.empty()) throw ConfigError(fmt("multimodal: the ", opt.task, " task needs --data (a prepared digit image set)"));
  if (task_audio && opt.audio_data.empty())
    throw ConfigError(fmt("multimodal: the ", opt.task, " task needs --audio-data (a prepared spoken-words folder: dsforge audio prepare)"));
  model::CausalLm lm = model::load_pretrained(lm_dir);
  if (!lm->config().is_deepseek())
    throw ConfigError(fmt(lm_dir, ": model_type '", lm->config().model_type, "'; the multimodal prefix needs a DeepSeek-V3 language model"));
  const tok::BpeTokenizer tok = tok::BpeTokenizer::load(path_join(lm_dir, "tokenizer.json"));
  if (tok.eot_id() < 0) throw ConfigError(fmt(lm_dir, "/tokenizer.json: no end-of-text special token to end answers with"));

  // The examples: training ones from the train splits, held-out ones from the image val split (digits
  // never seen) and the audio test split (voices never heard).
  Examples train, test;
  std::string held = "val";
  if (opt.task == "digits") {
    held = held_out_split(read_dataset_info(data_dir), data_dir);
    train = digits_examples(load_image_split(data_dir, "train"), opt.train_examples, opt.digits, opt.seed * 7 + 1);
    test = digits_examples(load_image_split(data_dir, held), opt.test_examples, opt.digits, opt.seed * 7 + 2);
  } else if (opt.task == "spoken") {
    audio::AudioSplit tr = audio::load_audio_split(opt.audio_data, "train");
    const auto definitions = data::wordnet_first_definitions(opt.wordnet_dir, tr.classes);
    train = spoken_examples(std::move(tr), opt.train_examples, definitions, opt.seed * 7 + 1);
    test = spoken_examples(audio::load_audio_split(opt.audio_data, "test"), opt.test_examples, definitions, opt.seed * 7 + 2);
  } else {
    held = held_out_split(read_dataset_info(data_dir), data_dir);
    train = digit_pair_examples(load_image_split(data_dir, "train"), audio::load_audio_split(opt.audio_data, "train"), opt.train_examples,
                                opt.seed * 7 + 1);
    test = digit_pair_examples(load_image_split(data_dir, held), audio::load_audio_split(opt.audio_data, "test"), opt.test_examples,
                               opt.seed * 7 + 2);
  }

  std::optional<ImageModelConfig> ec;
  if (use_image) ec = default_image_model(opt.encoder, train.images.channels, train.images.height, train.images.width, 10);
  std::optional<audio::AudioModelConfig> ac;
  std::shared_ptr<audio::AudioFeaturizer> featurizer;
  if (use_audio) {
    if (!opt.audio_encoder_from.empty()) {  // its features, normalisation and architecture
      const audio::LoadedAudioModel from = audio::load_audio_model(opt.audio_encoder_from);
      ac = from.model->config();
      if (ac->arch != opt.audio_encoder)
        throw ConfigError(fmt("multimodal: --audio-encoder-from ", opt.audio_encoder_from, " is a ", ac->arch, ", --audio-encoder says ", opt.audio_encoder));
      if (ac->sample_rate != train.audio.rate)
        throw DataError(fmt(opt.audio_data, ": clips at ", train.audio.rate, " Hz; the audio encoder ", opt.audio_encoder_from, " takes ", ac->sample_rate));
      featurizer = from.featurizer;
    } else {
      int64_t longest = 0;
      for (int64_t i = 0; i < train.audio.size(); ++i)
        longest = std::max(longest, train.audio.offsets[static_cast<size_t>(i) + 1] - train.audio.offsets[static_cast<size_t>(i)]);
      ac = audio::default_audio_model(opt.audio_encoder, train.audio.rate, longest, static_cast<int64_t>(train.audio.classes.size()));
      featurizer = std::make_shared<audio::AudioFeaturizer>(*ac);
      featurizer->fit_normalisation(train.audio);
    }
  }
  auto m = std::make_shared<MultimodalImpl>(lm, ec, ac);
  if (opt.freeze_lm)
    for (auto& p : m->lm->parameters()) p.set_requires_grad(false);
  MultimodalResult r;
  r.task = opt.task;
  r.inputs = opt.inputs;
  r.questions = questions;
  r.freeze_lm = opt.freeze_lm;
  r.encoder_from = opt.encoder_from;
  r.prefix_tokens = m->prefix_tokens();
  r.train_examples = opt.train_examples;
  r.held_out = opt.test_examples;
  for (const auto& p : m->parameters()) {
    r.total_parameters += p.numel();
    r.trainable_parameters += p.requires_grad() ? p.numel() : 0;
  }
  tasks::FinetuneSchedule sched = tasks::finetune_schedule(opt.train_examples, opt);
  RunConfig cfg = tasks::finetune_run_config(sched, opt.overrides, out_dir);
  MultimodalTask task(m, train, featurizer.get(), questions, tok, opt.seed + 1,
                      fmt("multimodal|", lm_dir, "|", data_dir, "|", opt.task, "|", opt.inputs, "|", use_image ? opt.encoder : "", "|",
                          opt.freeze_lm, "|", opt.digits, "|", opt.train_examples, "|", opt.encoder_from, "|", opt.audio_data, "|",
                          use_audio ? opt.audio_encoder : "", "|", opt.audio_encoder_from),
                      use_image ? opt.encoder_from : "", use_audio ? opt.audio_encoder_from : "");
  const auto t0 = std::chrono::steady_clock::now();
  r.epoch_losses = tasks::run_finetune(task, cfg, (opt.train_examples + opt.batch - 1) / opt.batch, "multimodal");
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Held-out answers, grouped by question (one prompt length per batch), each up to the longest
  // training answer's tokens and a few more (a WordNet definition runs to dozens).
  int64_t longest_answer = 0;
  for (const auto& ex : train.items)
    longest_answer = std::max(longest_answer, static_cast<int64_t>(tok.encode(" " + ex.answer, false).size()));
  r.max_answer_tokens = longest_answer + 4;
  std::vector<std::string> answers(static_cast<size_t>(opt.test_examples)), expected;
  for (size_t q = 0; q < questions.size(); ++q) {
    std::vector<int64_t> idx;
    for (int64_t e = 0; e < opt.test_examples; ++e)
      if (test.items[static_cast<size_t>(e)].question == q) idx.push_back(e);
    for (size_t first = 0; first < idx.size(); first += 128) {
      const std::vector<int64_t> part(idx.begin() + static_cast<std::ptrdiff_t>(first),
                                      idx.begin() + static_cast<std::ptrdiff_t>(std::min(idx.size(), first + 128)));
      at::NoGradGuard ng;
      m->eval();
      const auto [images, features] = example_inputs(*m, test, featurizer.get(), part);
      const auto a = greedy_answers(*m, tok, m->prefix(images, features), questions[q], r.max_answer_tokens);
      for (size_t k = 0; k < part.size(); ++k) answers[static_cast<size_t>(part[k])] = a[k];
    }
  }
  std::vector<int64_t> right(questions.size(), 0), asked(questions.size(), 0);
  int64_t correct = 0;
  for (int64_t e = 0; e < opt.test_examples; ++e) {
    const Example& ex = test.items[static_cast<size_t>(e)];
    expected.push_back(ex.answer);
    const bool ok = answers[static_cast<size_t>(e)] == ex.answer;
    correct += ok;
    right[ex.question] += ok;
    ++asked[ex.question];
    if (r.samples.size() < 12) r.samples.push_back({questions[ex.question], ex.answer, answers[static_cast<size_t>(e)], ok});
  }
  r.exact_match = static_cast<double>(correct) / static_cast<double>(opt.test_examples);
  for (size_t q = 0; q < questions.size(); ++q) r.exact_match_by_question.push_back(asked[q] ? static_cast<double>(right[q]) / static_cast<double>(asked[q]) : 0.0);
  r.bleu = eval::corpus_bleu(answers, {expected}).score;
  r.chrf = eval::corpus_chrf(answers, {expected}).score;

  // The model folder: the language model (tuned or not) with its tokenizer, each input side, the config.
  const std::string stage = path_join(out_dir, "model.partial"), dir = path_join(out_dir, "model");
  remove_all(stage);
  make_dirs(stage);
  model::save_pretrained(path_join(stage, "lm"), *m->lm);
  model::copy_companion_files(lm_dir, path_join(stage, "lm"));
  nlohmann::ordered_json config = {{"model_type", "multimodal_lm"}, {"task", opt.task}, {"inputs", opt.inputs}};
  if (m->vision) {
    save_safetensors(path_join(stage, "vision.safetensors"), model::model_state(*m->vision), {{"format", "pt"}});
    config["encoder"] = to_json(*ec);
    config["mean"] = train.images.mean;
    config["std"] = train.images.stddev;
    config["image_tokens"] = m->vision->tokens;
    config["encoder_from"] = opt.encoder_from;
  }
  if (m->audio) {
    save_safetensors(path_join(stage, "audio.safetensors"), model::model_state(*m->audio), {{"format", "pt"}});
    config["audio_encoder"] = audio::to_json(*ac);
    config["audio_mean"] = featurizer->mean();
    config["audio_std"] = featurizer->stddev();
    config["audio_preprocess"] = audio::to_json(audio::prepared_preprocess(opt.audio_data));
    config["audio_tokens"] = m->audio->tokens;
    config["audio_encoder_from"] = opt.audio_encoder_from;
  }
  config["prefix_tokens"] = r.prefix_tokens;
  config["digits"] = opt.digits;
  config["questions"] = questions;
  config["freeze_lm"] = opt.freeze_lm;
  config["lm_source"] = lm_dir;
  write_file_atomic(path_join(stage, "config.json"), config.dump(2) + "\n");
  replace_dir(stage, dir, "multimodal model");
  // Held-out inputs to ask about (`dsforge generate --image/--audio`), with their questions and answers.
  if (opt.write_examples > 0) {
    const std::string ex = path_join(out_dir, "examples");
    make_dirs(ex);
    std::string tsv = "image\taudio\tquestion\texpected\n";
    for (int64_t e = 0; e < std::min(opt.write_examples, opt.test_examples); ++e) {
      const Example& x = test.items[static_cast<size_t>(e)];
      std::string image, clip;
      if (x.image >= 0) {
        image = fmt("heldout_", e, ".png");
        write_file_atomic(path_join(ex, image),
                          png_grid({test.images.image(x.image)}, test.images.channels, test.images.height, test.images.width, 1, 1));
      }
      if (x.clip >= 0) {
        clip = fmt("heldout_", e, ".wav");
        audio::write_wav(path_join(ex, clip), test.audio.clip(x.clip), test.audio.rate);
      }
      tsv += fmt(image, "\t", clip, "\t", questions[x.question], "\t", x.answer, "\n");
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
  return {{"task", r.task},
          {"inputs", r.inputs},
          {"questions", r.questions},
          {"exact_match", r.exact_match},
          {"exact_match_by_question", r.exact_match_by_question},
          {"bleu", r.bleu},
          {"chrf", r.chrf},
          {"held_out", r.held_out},
          {"max_answer_tokens", r.max_answer_tokens},
          {"train_examples", r.train_examples},
          {"freeze_lm", r.freeze_lm},
          {"prefix_tokens", r.prefix_tokens},
          {"trainable_parameters", r.trainable_parameters},
          {"total_parameters", r.total_parameters},
          {"train_seconds", r.train_seconds},
          {"epoch_losses", r.epoch_losses},
          {"samples", samples}};
}

std::string answer_about(const std::string& model_dir, const std::string& image_file, const std::string& audio_file,
                         const std::string& prompt, int64_t max_new_tokens) {
  LoadedMultimodal m = load_multimodal(model_dir);
  if (m.model->vision && image_file.empty()) throw ConfigError(fmt(model_dir, ": the model reads a picture: give --image FILE"));
  if (!m.model->vision && !image_file.empty()) throw ConfigError(fmt(model_dir, ": the model reads no picture (inputs: audio); drop --image"));
  if (m.model->audio && audio_file.empty()) throw ConfigError(fmt(model_dir, ": the model reads a clip: give --audio FILE"));
  if (!m.model->audio && !audio_file.empty()) throw ConfigError(fmt(model_dir, ": the model reads no audio; drop --audio"));
  at::Tensor images, features;
  if (m.model->vision) {
    const ImageModelConfig& ec = m.model->vision->encoder->config();
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
    images = image_batch(d, {0});
  }
  if (m.model->audio) {
    const audio::AudioPreprocess pre = audio::audio_preprocess_from_json(m.config.value("audio_preprocess", nlohmann::json::object()));
    features = m.featurizer->batch({audio::read_clip_for_model(audio_file, m.model->audio->encoder->config().sample_rate, pre)});
  }
  at::NoGradGuard ng;
  return greedy_answers(*m.model, m.tok, m.model->prefix(images, features), prompt, max_new_tokens).at(0);
}

}  // namespace dsforge::vision
