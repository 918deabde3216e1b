#include "dsforge/audio/train_audio.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>

#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/dsp.h"
#include "dsforge/audio/models.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/io.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/finetune_run.h"
#include "dsforge/train/task.h"

namespace dsforge::audio {

// ---------------------------------------------------------------- augmentation spec

bool AudioAugment::any() const {
  return wave.max_shift_seconds > 0 || wave.speed_min != 1.0 || wave.speed_max != 1.0 || wave.snr_db >= 0 ||
         (spec.freq_masks > 0 && spec.freq_width > 0) || (spec.time_masks > 0 && spec.time_width > 0);
}

std::string AudioAugment::describe() const {
  std::vector<std::string> parts;
  if (wave.max_shift_seconds > 0) parts.push_back(fmt("shift=", wave.max_shift_seconds));
  if (wave.speed_min != 1.0 || wave.speed_max != 1.0) parts.push_back(fmt("speed=", wave.speed_min, ":", wave.speed_max));
  if (wave.snr_db >= 0) parts.push_back(fmt("snr=", wave.snr_db));
  if (spec.freq_masks > 0 && spec.freq_width > 0) parts.push_back(fmt("freq-mask=", spec.freq_masks, "x", spec.freq_width));
  if (spec.time_masks > 0 && spec.time_width > 0) parts.push_back(fmt("time-mask=", spec.time_masks, "x", spec.time_width));
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ",") + p;
  return s.empty() ? "none" : s;
}

AudioAugment parse_audio_augment(const std::string& spec) {
  AudioAugment a;
  if (spec.empty() || spec == "none") return a;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string item = spec.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    auto bad = [&](const std::string& expected) {
      return ConfigError(fmt("audio augmentation '", item, "': expected ", expected,
                             " (items: shift=SECONDS, speed=MIN:MAX, snr=DB, freq-mask=COUNTxWIDTH, time-mask=COUNTxWIDTH)"));
    };
    auto number = [&](const std::string& s, const std::string& expected) {
      try {
        size_t used = 0;
        const double v = std::stod(s, &used);
        if (used != s.size() || !std::isfinite(v)) throw bad(expected);
        return v;
      } catch (const std::logic_error&) {
        throw bad(expected);
      }
    };
    auto pair = [&](char sep, const std::string& expected) {
      const size_t p = value.find(sep);
      if (p == std::string::npos) throw bad(expected);
      return std::make_pair(number(value.substr(0, p), expected), number(value.substr(p + 1), expected));
    };
    if (key == "shift") {
      a.wave.max_shift_seconds = number(value, "a shift in seconds >= 0");
      if (a.wave.max_shift_seconds < 0) throw bad("a shift in seconds >= 0");
    } else if (key == "speed") {
      std::tie(a.wave.speed_min, a.wave.speed_max) = pair(':', "MIN:MAX speed factors in [0.5, 2]");
      if (!(a.wave.speed_min >= 0.5 && a.wave.speed_max <= 2 && a.wave.speed_min <= a.wave.speed_max))
        throw bad("MIN:MAX speed factors in [0.5, 2], MIN <= MAX");
    } else if (key == "snr") {
      a.wave.snr_db = number(value, "an SNR in dB >= 0");
      if (a.wave.snr_db < 0) throw bad("an SNR in dB >= 0");
    } else if (key == "freq-mask" || key == "time-mask") {
      const auto [count, width] = pair('x', "COUNTxWIDTH, two whole numbers >= 0");
      if (count < 0 || width < 0 || count != std::floor(count) || width != std::floor(width)) throw bad("COUNTxWIDTH, two whole numbers >= 0");
      (key == "freq-mask" ? a.spec.freq_masks : a.spec.time_masks) = static_cast<int64_t>(count);
      (key == "freq-mask" ? a.spec.freq_width : a.spec.time_width) = static_cast<int64_t>(width);
    } else {
      throw bad("a known item");
    }
  }
  return a;
}

uint64_t audio_seed(uint64_t seed, int64_t step, int64_t row) {
  return SplitMix64(seed ^ (0xA0761D6478BD642Full * static_cast<uint64_t>(step + 1)) ^ (0xE7037ED1A0B428DBull * static_cast<uint64_t>(row + 1)))
      .next();
}

// ---------------------------------------------------------------- features

AudioFeaturizer::AudioFeaturizer(const AudioModelConfig& c, std::vector<double> mean, std::vector<double> stddev)
    : c_(c), fx_(std::make_unique<FeatureExtractor>(feature_options(c))), mean_(std::move(mean)), std_(std::move(stddev)) {
  validate(c);
  if (mean_.empty()) mean_.assign(static_cast<size_t>(c.rows()), 0.0);
  if (std_.empty()) std_.assign(static_cast<size_t>(c.rows()), 1.0);
  if (static_cast<int64_t>(mean_.size()) != c.rows() || static_cast<int64_t>(std_.size()) != c.rows())
    throw ConfigError(fmt("audio features: ", mean_.size(), " means and ", std_.size(), " deviations for ", c.rows(), " feature rows"));
}
AudioFeaturizer::~AudioFeaturizer() = default;

std::vector<float> AudioFeaturizer::window(const float* x, int64_t n) const {
  const int64_t len = c_.clip_samples;
  std::vector<float> w(static_cast<size_t>(len), 0.0f);
  if (n >= len) std::copy(x + (n - len) / 2, x + (n - len) / 2 + len, w.begin());
  else std::copy(x, x + n, w.begin() + (len - n) / 2);
  return w;
}

Features AudioFeaturizer::features(std::vector<float> w, const AudioAugment* augment, uint64_t seed) const {
  if (augment && augment->any()) {
    const std::vector<float> y = augment_wave(w, c_.sample_rate, augment->wave, seed);
    w = window(y.data(), static_cast<int64_t>(y.size()));
  }
  Features f = fx_->compute(c_.features, w);
  if (augment) spec_augment(f, augment->spec, seed ^ 0x5bec0a11ull);
  return f;
}

namespace {

at::Tensor stack_features(const std::vector<Features>& fs, const std::vector<double>& mean, const std::vector<double>& stddev) {
  const auto n = static_cast<int64_t>(fs.size());
  const int64_t R = fs.empty() ? 0 : fs[0].rows, T = fs.empty() ? 0 : fs[0].frames;
  at::Tensor x = at::empty({n, R, T}, at::kFloat);
  float* out = x.data_ptr<float>();
  for (int64_t k = 0; k < n; ++k)
    for (int64_t r = 0; r < R; ++r) {
      const auto m = static_cast<float>(mean[static_cast<size_t>(r)]);
      const auto inv = static_cast<float>(1.0 / std::max(1e-6, stddev[static_cast<size_t>(r)]));
      const float* src = fs[static_cast<size_t>(k)].data.data() + r * T;
      float* dst = out + (k * R + r) * T;
      for (int64_t t = 0; t < T; ++t) dst[t] = (src[t] - m) * inv;
    }
  return x;
}

}  // namespace

at::Tensor AudioFeaturizer::batch(const AudioSplit& s, const std::vector<int64_t>& indices, const AudioAugment* augment, uint64_t seed,
                                  int64_t step, int64_t first_row) const {
  std::vector<Features> fs(indices.size());
  at::parallel_for(0, static_cast<int64_t>(indices.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t i = indices[static_cast<size_t>(k)];
      const int64_t a = s.offsets[static_cast<size_t>(i)], b = s.offsets[static_cast<size_t>(i) + 1];
      fs[static_cast<size_t>(k)] = features(window(s.samples.data() + a, b - a), augment, audio_seed(seed, step, first_row + k));
    }
  });
  return stack_features(fs, mean_, std_);
}

at::Tensor AudioFeaturizer::batch(const std::vector<std::vector<float>>& clips) const {
  std::vector<Features> fs;
  for (const auto& c : clips) fs.push_back(features(window(c.data(), static_cast<int64_t>(c.size())), nullptr, 0));
  return stack_features(fs, mean_, std_);
}

void AudioFeaturizer::fit_normalisation(const AudioSplit& s) {
  const auto R = static_cast<size_t>(c_.rows());
  std::vector<double> sum(R, 0.0), sq(R, 0.0);
  double count = 0;
  for (int64_t i = 0; i < s.size(); ++i) {
    const int64_t a = s.offsets[static_cast<size_t>(i)], b = s.offsets[static_cast<size_t>(i) + 1];
    const Features f = features(window(s.samples.data() + a, b - a), nullptr, 0);
    for (size_t r = 0; r < R; ++r)
      for (int64_t t = 0; t < f.frames; ++t) {
        const double v = f.data[r * static_cast<size_t>(f.frames) + static_cast<size_t>(t)];
        sum[r] += v;
        sq[r] += v * v;
      }
    count += static_cast<double>(f.frames);
  }
  if (count == 0) throw DataError("audio features: the training split has no clips");
  for (size_t r = 0; r < R; ++r) {
    mean_[r] = sum[r] / count;
    std_[r] = std::sqrt(std::max(0.0, sq[r] / count - mean_[r] * mean_[r]));
  }
}

// ---------------------------------------------------------------- training

namespace {

class AudioTask : public train::TrainTask {
 public:
  AudioTask(AudioClassifier m, const AudioFeaturizer& f, const AudioSplit& s, AudioAugment a, uint64_t seed, std::string identity)
      : m_(std::move(m)), f_(f), s_(s), a_(a), seed_(seed), identity_(std::move(identity)), stream_(s.size(), seed) {}
  torch::nn::Module& module() override { return *m_; }
  void init_weights(double, uint64_t seed) override { m_->init_weights(seed); }
  std::string describe() const override {
    const AudioModelConfig& c = m_->config();
    return fmt(c.arch, " over ", c.features, " [", c.rows(), " x ", c.frames(), "]: ", model::count_parameters(*m_), " parameters, ",
               s_.size(), " training clips, augmentation ", a_.describe());
  }
  std::string config_json() const override { return to_json(m_->config()).dump(); }
  std::string identity() const override { return identity_; }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) override {
    if (step != step_) step_ = step, micro_ = 0;
    const std::vector<int64_t> idx = stream_.next(rows, first, count);
    const int64_t row = micro_++ * rows + first;  // each clip's augmentation is keyed by (step, its row in the step)
    at::Tensor x = f_.batch(s_, idx, &a_, seed_, step, row).to(device);
    std::vector<int64_t> labels;
    for (const int64_t i : idx) labels.push_back(s_.labels[static_cast<size_t>(i)]);
    at::Tensor loss = at::cross_entropy_loss(m_->forward(x).to(at::kFloat), at::tensor(labels, at::kLong).to(device));
    return {loss, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }
  double flops_per_token() const override { return 3 * audio_model_flops(m_->config()); }

 private:
  AudioClassifier m_;
  const AudioFeaturizer& f_;
  const AudioSplit& s_;
  AudioAugment a_;
  uint64_t seed_;
  std::string identity_;
  tasks::ExampleStream stream_;
  int64_t step_ = -1, micro_ = 0;
};

AudioModelConfig model_config(const AudioTrainOptions& opt, const AudioSplit& train) {
  int64_t clip = 0;
  for (int64_t i = 0; i < train.size(); ++i)
    clip = std::max(clip, train.offsets[static_cast<size_t>(i) + 1] - train.offsets[static_cast<size_t>(i)]);
  if (opt.clip_seconds > 0) clip = std::llround(opt.clip_seconds * static_cast<double>(train.rate));
  AudioModelConfig c = default_audio_model(opt.arch, train.rate, clip, static_cast<int64_t>(train.classes.size()));
  if (opt.model.is_object() && !opt.model.empty()) {
    nlohmann::json j = to_json(c);
    const nlohmann::json full = to_json(default_audio_model(c.arch == "cnn" ? "lstm" : "cnn", 1000, 1000, 2));
    for (const auto& [k, v] : opt.model.items()) {
      if (!j.contains(k) && !full.contains(k))
        throw ConfigError(fmt("audio model setting '", k, "': unknown (features, n_fft, hop_length, n_mels, n_mfcc, hidden, layers, ",
                              "bidirectional, width_base, token_frames, dropout)"));
      if (k == "arch" || k == "sample_rate" || k == "classes")
        throw ConfigError(fmt("audio model setting '", k, "' comes from --arch and the data"));
      j[k] = v;
    }
    c = audio_model_config_from_json(j, "audio model settings");
  }
  validate(c);
  return c;
}

// Where a hardest clip is written beside the report.
std::string hard_clip_file(size_t k, const HardClip& h) {
  return fmt("hardest/", k + 1 < 10 ? "0" : "", k + 1, "_", h.gold, "_as_", h.predicted, ".wav");
}

// A split with clips, or nothing (no file, or an empty split: a set prepared without validation voices).
std::optional<AudioSplit> nonempty_split(const std::string& data_dir, const std::string& name) {
  if (!file_exists(path_join(data_dir, name + ".safetensors"))) return std::nullopt;
  AudioSplit s = load_audio_split(data_dir, name);
  if (s.size() == 0) return std::nullopt;
  return s;
}

}  // namespace

AudioEvalResult evaluate_audio_model(AudioClassifierImpl& model, const AudioFeaturizer& f, const AudioSplit& s, int64_t hard) {
  AudioEvalResult r;
  r.clips = s.size();
  if (s.size() == 0) throw DataError("audio evaluation: the split has no clips");
  if (static_cast<int64_t>(s.classes.size()) != model.config().classes)
    throw DataError(fmt("audio evaluation: the split has ", s.classes.size(), " classes, the model ", model.config().classes));
  const bool was_training = model.is_training();
  model.eval();
  at::NoGradGuard ng;
  const c10::Device device = model.parameters().front().device();
  std::vector<double> losses(static_cast<size_t>(s.size())), confidence(static_cast<size_t>(s.size()));
  r.predictions.resize(static_cast<size_t>(s.size()));
  double seconds = 0;
  const int64_t B = 64;
  for (int64_t first = 0; first < s.size(); first += B) {
    std::vector<int64_t> idx(static_cast<size_t>(std::min(B, s.size() - first)));
    std::iota(idx.begin(), idx.end(), first);
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor logp = at::log_softmax(model.forward(f.batch(s, idx).to(device)).to(at::kFloat), 1).cpu().contiguous();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t K = logp.size(1);
    const float* lp = logp.data_ptr<float>();
    for (size_t k = 0; k < idx.size(); ++k) {
      const auto i = static_cast<size_t>(idx[k]);
      const float* row = lp + static_cast<int64_t>(k) * K;
      const int64_t best = std::max_element(row, row + K) - row;
      r.predictions[i] = best;
      losses[i] = -row[s.labels[i]];
      confidence[i] = std::exp(row[best]);
    }
  }
  if (was_training) model.train();
  r.clips_per_second = static_cast<double>(s.size()) / std::max(1e-9, seconds);
  r.loss = std::accumulate(losses.begin(), losses.end(), 0.0) / static_cast<double>(s.size());
  std::vector<std::string> pred, gold;
  std::map<int64_t, SpeakerScore> by_speaker;
  for (size_t i = 0; i < static_cast<size_t>(s.size()); ++i) {
    pred.push_back(s.classes[static_cast<size_t>(r.predictions[i])]);
    gold.push_back(s.classes[static_cast<size_t>(s.labels[i])]);
    SpeakerScore& sp = by_speaker[s.speakers[i]];
    sp.speaker = s.speaker_names[static_cast<size_t>(s.speakers[i])];
    ++sp.clips;
    sp.correct += r.predictions[i] == s.labels[i];
  }
  for (auto& [k, sp] : by_speaker) r.speakers.push_back(sp);
  std::sort(r.speakers.begin(), r.speakers.end(), [](const SpeakerScore& a, const SpeakerScore& b) { return a.speaker < b.speaker; });
  r.report = eval::classification_report(pred, gold);
  for (const int64_t index : eval::highest_first(losses, hard)) {
    const auto i = static_cast<size_t>(index);
    r.hardest.push_back({index, s.sources.empty() ? fmt("clip ", i) : s.sources[i],
                         s.speaker_names[static_cast<size_t>(s.speakers[i])], gold[i], pred[i], losses[i], confidence[i]});
  }
  return r;
}

AudioTrainResult train_audio_model(const std::string& data_dir, const std::string& out_dir, const AudioTrainOptions& opt) {
  if (out_dir.empty()) throw ConfigError("audio train: --out is required");
  const AudioSplit train = load_audio_split(data_dir, "train");
  if (train.size() == 0) throw DataError(fmt(data_dir, ": the train split has no clips"));
  std::optional<AudioSplit> held_val = nonempty_split(data_dir, "val"), held_test = nonempty_split(data_dir, "test");
  if (!held_val && !held_test) throw DataError(fmt(data_dir, ": no validation or test clips to score on"));
  const bool has_test = held_val && held_test;
  const std::string val_name = held_val ? "val" : "test";
  const AudioSplit val = std::move(held_val ? *held_val : *held_test);
  const AudioSplit test = has_test ? std::move(*held_test) : AudioSplit{};
  for (const AudioSplit* s : {&val, &test})
    if (s->size() > 0 && (s->classes != train.classes || s->rate != train.rate))
      throw DataError(fmt(data_dir, ": the held-out splits' classes or sample rate differ from the train split's"));

  AudioTrainResult r;
  r.config = model_config(opt, train);
  r.out_dir = out_dir;
  r.train_clips = train.size();
  AudioClassifier model = make_audio_model(r.config);
  r.parameters = model::count_parameters(*model);
  r.forward_flops = audio_model_flops(r.config);
  AudioFeaturizer f(r.config);
  f.fit_normalisation(train);

  tasks::FinetuneSchedule sched = tasks::finetune_schedule(train.size(), opt);
  const int64_t steps_per_epoch = (train.size() + opt.batch - 1) / opt.batch;
  std::vector<std::string> overrides{fmt("train.eval_every=", steps_per_epoch)};  // validation after each epoch unless overridden
  overrides.insert(overrides.end(), opt.overrides.begin(), opt.overrides.end());
  RunConfig cfg = tasks::finetune_run_config(sched, overrides, out_dir);
  AudioTask task(model, f, train, opt.augment, opt.seed + 1,
                 fmt("audio|", data_dir, "|", train.size(), "|", to_json(r.config).dump(), "|", opt.augment.describe()));
  auto evaluate = [&](int64_t) {
    const AudioEvalResult e = evaluate_audio_model(*model, f, val, 0);
    r.val_accuracy.push_back(e.report.accuracy);
    return train::Scalars{{"val_loss", e.loss}, {"val_accuracy", e.report.accuracy}};
  };
  const auto t0 = std::chrono::steady_clock::now();
  r.epoch_losses = tasks::run_finetune(task, cfg, steps_per_epoch, "audio train", evaluate);
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.val = evaluate_audio_model(*model, f, val);
  r.val.split = val_name;
  if (has_test) {
    r.test = evaluate_audio_model(*model, f, test);
    r.test.split = "test";
  }

  // The model folder, whole or not at all.
  const std::string stage = path_join(out_dir, "model.partial"), dir = path_join(out_dir, "model");
  remove_all(stage);
  make_dirs(stage);
  nlohmann::ordered_json config = {{"model_type", "audio_classifier"},
                                   {"audio_model", to_json(r.config)},
                                   {"classes", train.classes},
                                   {"mean", f.mean()},
                                   {"std", f.stddev()},
                                   {"preprocess", to_json(prepared_preprocess(data_dir))},
                                   {"augmentation", opt.augment.describe()},
                                   {"data", data_dir}};
  write_file_atomic(path_join(stage, "config.json"), config.dump(2) + "\n");
  save_safetensors(path_join(stage, "model.safetensors"), model::model_state(*model), {{"format", "pt"}});
  replace_dir(stage, dir, "audio model");

  // The hardest held-out clips, to listen to beside the report.
  const AudioEvalResult& shown = has_test ? r.test : r.val;
  const AudioSplit& shown_split = has_test ? test : val;
  const std::string hard_dir = path_join(out_dir, "hardest");
  remove_all(hard_dir);
  make_dirs(hard_dir);
  for (size_t k = 0; k < shown.hardest.size(); ++k) {
    const HardClip& h = shown.hardest[k];
    write_wav(path_join(out_dir, hard_clip_file(k, h)), shown_split.clip(h.index), shown_split.rate);
  }
  write_file_atomic(path_join(out_dir, "audio_train.json"), audio_train_json(r).dump(2) + "\n");
  write_file_atomic(path_join(out_dir, "report.html"), audio_report_html(r, opt.augment));
  return r;
}

// ---------------------------------------------------------------- saved models

LoadedAudioModel load_audio_model(const std::string& model_dir) {
  const std::string path = path_join(model_dir, "config.json");
  if (!file_exists(path)) throw IoError(fmt(model_dir, ": no config.json (a folder written by `dsforge audio train`?)"));
  LoadedAudioModel m;
  try {
    m.config = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(path, ": not valid JSON: ", e.what()));
  }
  if (m.config.value("model_type", "") != "audio_classifier")
    throw ConfigError(fmt(path, ": model_type is '", m.config.value("model_type", ""), "', expected 'audio_classifier'"));
  try {
    const AudioModelConfig c = audio_model_config_from_json(m.config.at("audio_model"), path);
    m.classes = m.config.at("classes").get<std::vector<std::string>>();
    m.featurizer = std::make_shared<AudioFeaturizer>(c, m.config.at("mean").get<std::vector<double>>(),
                                                     m.config.at("std").get<std::vector<double>>());
    m.preprocess = audio_preprocess_from_json(m.config.value("preprocess", nlohmann::json::object()));
    if (static_cast<int64_t>(m.classes.size()) != c.classes) throw ConfigError(fmt(path, ": ", m.classes.size(), " classes for a model of ", c.classes));
    m.model = make_audio_model(c);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt(path, ": ", e.what()));
  }
  const std::string weights = path_join(model_dir, "model.safetensors");
  model::load_model_state(*m.model, load_safetensors(weights).tensors, weights);
  m.model->eval();
  return m;
}

AudioEvalResult evaluate_loaded_audio_model(const std::string& model_dir, const std::string& data_dir, const std::string& split) {
  const LoadedAudioModel m = load_audio_model(model_dir);
  const AudioSplit s = load_audio_split(data_dir, split);
  if (s.rate != m.model->config().sample_rate)
    throw DataError(fmt(data_dir, ": clips at ", s.rate, " Hz, the model ", model_dir, " takes ", m.model->config().sample_rate, " Hz"));
  if (s.classes != m.classes) throw DataError(fmt(data_dir, ": its classes differ from the model's (", model_dir, "/config.json)"));
  AudioEvalResult e = evaluate_audio_model(*m.model, *m.featurizer, s);
  e.split = split;
  return e;
}

AudioPreprocess prepared_preprocess(const std::string& data_dir) {
  const std::string path = path_join(data_dir, "audio.json");
  AudioPreprocess p;
  if (!file_exists(path)) return p;
  nlohmann::json info;
  try {
    info = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(path, ": not valid JSON: ", e.what()));
  }
  const nlohmann::json trim = info.value("trim_db", nlohmann::json(p.trim_db));  // null: prepared without trimming
  p.trim_db = trim.is_number() ? trim.get<double>() : -1.0;
  p.target_dbfs = info.value("target_dbfs", p.target_dbfs);
  return p;
}

nlohmann::json to_json(const AudioPreprocess& p) { return {{"trim_db", p.trim_db}, {"target_dbfs", p.target_dbfs}}; }

AudioPreprocess audio_preprocess_from_json(const nlohmann::json& j) {
  AudioPreprocess p;
  p.trim_db = j.value("trim_db", p.trim_db);
  p.target_dbfs = j.value("target_dbfs", p.target_dbfs);
  return p;
}

std::vector<float> read_clip_for_model(const std::string& file, int64_t rate, const AudioPreprocess& p) {
  const Clip c = read_audio(file);
  std::vector<float> x = resample(c.samples, c.rate, rate);
  if (p.trim_db >= 0) x = trim_silence(x, rate, p.trim_db);
  if (x.empty()) throw DataError(fmt(file, ": silent"));
  return normalize_loudness(x, p.target_dbfs);
}

std::vector<AudioPrediction> predict_audio_files(const LoadedAudioModel& m, const std::vector<std::string>& files) {
  if (files.empty()) throw DataError("audio predict: no audio files given");
  std::vector<std::vector<float>> clips;
  for (const auto& f : files) clips.push_back(read_clip_for_model(f, m.model->config().sample_rate, m.preprocess));
  at::NoGradGuard ng;
  at::Tensor p = at::softmax(m.model->forward(m.featurizer->batch(clips)).to(at::kFloat), 1).contiguous();
  std::vector<AudioPrediction> out;
  for (size_t i = 0; i < files.size(); ++i) {
    const int64_t best = p[static_cast<int64_t>(i)].argmax().item<int64_t>();
    out.push_back({files[i], m.classes[static_cast<size_t>(best)], p[static_cast<int64_t>(i)][best].item<double>()});
  }
  return out;
}

// ---------------------------------------------------------------- results

nlohmann::ordered_json audio_eval_json(const AudioEvalResult& e) {
  nlohmann::ordered_json per_class = nlohmann::ordered_json::object();
  for (size_t k = 0; k < e.report.labels.size(); ++k)
    per_class[e.report.labels[k]] = {{"precision", e.report.per_class[k].precision}, {"recall", e.report.per_class[k].recall},
                                     {"f1", e.report.per_class[k].fmeasure}, {"support", e.report.support[k]}};
  nlohmann::ordered_json speakers = nlohmann::ordered_json::object();
  for (const auto& s : e.speakers) speakers[s.speaker] = {{"clips", s.clips}, {"accuracy", s.accuracy()}};
  nlohmann::ordered_json hard = nlohmann::ordered_json::array();
  for (const auto& h : e.hardest)
    hard.push_back({{"index", h.index}, {"source", h.source}, {"speaker", h.speaker}, {"gold", h.gold}, {"predicted", h.predicted},
                    {"loss", h.loss}, {"confidence", h.confidence}});
  return {{"split", e.split},
          {"clips", e.clips},
          {"accuracy", e.report.accuracy},
          {"macro_f1", e.report.macro.fmeasure},
          {"weighted_f1", e.report.weighted.fmeasure},
          {"loss", e.loss},
          {"clips_per_second", e.clips_per_second},
          {"speakers", speakers},
          {"labels", e.report.labels},
          {"confusion", e.report.confusion},
          {"per_class", per_class},
          {"hardest", hard}};
}

nlohmann::ordered_json audio_train_json(const AudioTrainResult& r) {
  nlohmann::ordered_json j = {{"model", to_json(r.config)},     {"parameters", r.parameters},     {"forward_flops", r.forward_flops},
                              {"train_clips", r.train_clips},   {"train_seconds", r.train_seconds}, {"epoch_losses", r.epoch_losses},
                              {"val_accuracy", r.val_accuracy}, {"val", audio_eval_json(r.val)}};
  if (r.test.clips > 0) j["test"] = audio_eval_json(r.test);
  return j;
}

std::string audio_report_html(const AudioTrainResult& r, const AudioAugment& augment) {
  using report::html_escape;
  auto pct = [](double v) { return fmt(std::round(v * 10000) / 100, "%"); };
  const AudioEvalResult& held = r.test.clips > 0 ? r.test : r.val;
  const AudioModelConfig& c = r.config;
  std::string body =
      fmt("<h1>", html_escape(c.arch), " audio classifier</h1>\n<p>", r.parameters, " parameters over ", c.features, " frames (", c.rows(),
          " x ", c.frames(), ", ", c.clip_samples, " samples at ", c.sample_rate, " Hz per clip), ", r.train_clips, " training clips, ",
          c.classes, " classes, trained in ", std::lround(r.train_seconds), " s with augmentation <code>", html_escape(augment.describe()),
          "</code>. Accuracy <b>", pct(held.report.accuracy), "</b>, macro F1 ", std::round(held.report.macro.fmeasure * 10000) / 10000,
          " on ", held.clips, " ", held.split, " clips of voices never heard in training; ", std::lround(held.clips_per_second),
          " clips/s (features and forward).</p>\n");
  if (!r.epoch_losses.empty()) {
    report::Series s{"train loss", {}, r.epoch_losses};
    for (size_t e = 0; e < r.epoch_losses.size(); ++e) s.x.push_back(static_cast<double>(e + 1));
    body += report::svg_line_chart("Training loss per epoch", {s}, "cross-entropy", false, "epoch");
  }
  if (!r.val_accuracy.empty()) {
    report::Series s{"validation accuracy", {}, r.val_accuracy};
    for (size_t e = 0; e < r.val_accuracy.size(); ++e) s.x.push_back(static_cast<double>(e + 1));
    body += report::svg_line_chart("Validation accuracy per evaluation", {s}, "accuracy", false, "evaluation");
  }
  body += "<h2>Held-out voices</h2><table><tr><th>split</th><th>voice</th><th>clips</th><th>accuracy</th></tr>";
  for (const AudioEvalResult* e : {&r.val, &r.test})
    for (const auto& s : e->speakers)
      body += fmt("<tr><td>", e->split, "</td><td>", html_escape(s.speaker), "</td><td>", s.clips, "</td><td>", pct(s.accuracy()), "</td></tr>");
  body += "</table>\n";
  body += report::svg_confusion(fmt("Confusion matrix (", held.split, ")"), held.report.labels, held.report.confusion);
  std::vector<double> f1;
  for (const auto& p : held.report.per_class) f1.push_back(p.fmeasure);
  body += report::svg_bar_chart(fmt("F1 per class (", held.split, ")"), held.report.labels, f1, {}, "F1");
  if (!held.hardest.empty()) {
    body += fmt("<h2>Hardest ", held.split, " clips</h2><p>Highest loss first; the files are in hardest/ beside this page.</p><table>",
                "<tr><th></th><th>clip</th><th>voice</th><th>gold</th><th>predicted</th><th>p</th><th>loss</th></tr>");
    for (size_t k = 0; k < held.hardest.size(); ++k) {
      const HardClip& h = held.hardest[k];
      const std::string file = hard_clip_file(k, h);
      body += fmt("<tr><td><audio controls preload=\"none\" src=\"", html_escape(file), "\"></audio></td><td>", html_escape(h.source),
                  "</td><td>", html_escape(h.speaker), "</td><td><b>", html_escape(h.gold), "</b></td><td><b>", html_escape(h.predicted),
                  "</b></td><td>", std::round(h.confidence * 1000) / 1000, "</td><td>", std::round(h.loss * 100) / 100, "</td></tr>");
    }
    body += "</table>\n";
  }
  return report::html_page(fmt("dsforge audio ", c.arch), body);
}

}  // namespace dsforge::audio
