#include "dsforge/audio/model_config.h"

#include <algorithm>

#include "dsforge/core/error.h"

namespace dsforge::audio {

nlohmann::json to_json(const AudioModelConfig& c) {
  nlohmann::json j = {{"arch", c.arch},           {"features", c.features},     {"sample_rate", c.sample_rate},
                      {"clip_samples", c.clip_samples}, {"n_fft", c.n_fft},     {"hop_length", c.hop_length},
                      {"n_mels", c.n_mels},       {"n_mfcc", c.n_mfcc},         {"classes", c.classes},
                      {"token_frames", c.token_frames}, {"dropout", c.dropout}};
  j["hidden"] = c.hidden;
  if (c.arch == "cnn") {
    j["width_base"] = c.width_base;
  } else {
    j["layers"] = c.layers;
    j["bidirectional"] = c.bidirectional;
  }
  return j;
}

AudioModelConfig audio_model_config_from_json(const nlohmann::json& j, const std::string& origin) {
  AudioModelConfig c;
  try {
    c.arch = j.at("arch").get<std::string>();
    c.features = j.value("features", c.features);
    c.sample_rate = j.at("sample_rate").get<int64_t>();
    c.clip_samples = j.at("clip_samples").get<int64_t>();
    c.classes = j.at("classes").get<int64_t>();
    c.n_fft = j.value("n_fft", c.n_fft);
    c.hop_length = j.value("hop_length", c.hop_length);
    c.n_mels = j.value("n_mels", c.n_mels);
    c.n_mfcc = j.value("n_mfcc", c.n_mfcc);
    c.hidden = j.value("hidden", c.hidden);
    c.layers = j.value("layers", c.layers);
    c.bidirectional = j.value("bidirectional", c.bidirectional);
    c.width_base = j.value("width_base", c.width_base);
    c.token_frames = j.value("token_frames", c.token_frames);
    c.dropout = j.value("dropout", c.dropout);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt(origin, ": audio model config: ", e.what()));
  }
  validate(c);
  return c;
}

AudioModelConfig default_audio_model(const std::string& arch, int64_t sample_rate, int64_t clip_samples, int64_t classes) {
  AudioModelConfig c;
  c.arch = arch;
  c.features = arch == "cnn" ? "log-mel" : "mfcc";
  c.sample_rate = sample_rate;
  c.clip_samples = clip_samples;
  c.classes = classes;
  // 25 ms windows every 10 ms, the usual speech framing.
  c.n_fft = std::max<int64_t>(16, sample_rate / 40);
  c.hop_length = std::max<int64_t>(1, sample_rate / 100);
  return c;
}

void validate(const AudioModelConfig& c) {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw ConfigError(fmt("audio model (", c.arch, "): ", what));
  };
  need(c.arch == "lstm" || c.arch == "gru" || c.arch == "cnn", "arch must be lstm, gru or cnn");
  need(c.features == "mfcc" || c.features == "log-mel", fmt("features '", c.features, "' must be mfcc or log-mel"));
  need(c.classes >= 2, fmt("classes is ", c.classes, "; need at least 2"));
  need(c.sample_rate >= 1000, fmt("sample_rate ", c.sample_rate, " must be at least 1000"));
  need(c.n_fft >= 2 && c.hop_length >= 1, "n_fft must be at least 2 and hop_length positive");
  need(c.clip_samples > c.n_fft / 2, fmt("clip_samples ", c.clip_samples, " must exceed n_fft / 2 = ", c.n_fft / 2, " (one frame)"));
  need(c.n_mels >= 1 && c.n_mfcc >= 1 && c.n_mfcc <= c.n_mels, fmt("n_mfcc ", c.n_mfcc, " must be in [1, n_mels = ", c.n_mels, "]"));
  need(c.token_frames >= 1, "token_frames must be positive");
  need(c.dropout >= 0 && c.dropout < 1, "dropout must be in [0, 1)");
  need(c.hidden >= 1, "hidden must be positive");
  if (c.arch == "cnn") need(c.width_base >= 1 && c.rows() >= 4 && c.frames() >= 4, "needs at least 4 rows and frames and a positive width");
  else need(c.layers >= 1, "layers must be positive");
}

FeatureOptions feature_options(const AudioModelConfig& c) {
  FeatureOptions o;
  o.sample_rate = c.sample_rate;
  o.n_fft = c.n_fft;
  o.hop_length = c.hop_length;
  o.n_mels = c.n_mels;
  o.n_mfcc = c.n_mfcc;
  return o;
}

double audio_model_flops(const AudioModelConfig& c) {
  const double T = static_cast<double>(c.frames()), R = static_cast<double>(c.rows());
  double mac = 0;
  if (c.arch == "cnn") {
    const double a = static_cast<double>(c.width_base), b = 2 * a;
    mac += R * T * 9 * (a + a * a);
    mac += (R / 2) * (T / 2) * 9 * (a * b + b * b);
    mac += b * 4 * 8 * static_cast<double>(c.hidden) + static_cast<double>(c.hidden * c.classes);  // the pooled grid, fc, head
  } else {
    const double H = static_cast<double>(c.hidden), dirs = c.bidirectional ? 2 : 1, gates = c.arch == "lstm" ? 4 : 3;
    double in = R;
    for (int64_t l = 0; l < c.layers; ++l) {
      mac += dirs * T * gates * H * (in + H);
      in = dirs * H;
    }
    mac += in * static_cast<double>(c.classes);
  }
  return 2 * mac;
}

}  // namespace dsforge::audio
