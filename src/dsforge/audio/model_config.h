// The configuration of an audio classifier (audio/models.h builds the module) and of the features it
// reads, kept free of libtorch so that the CLI and the reports can read and print it.
//
// Every clip is centred in a window of clip_samples (silence around a shorter clip, the middle of a
// longer one), then turned into MFCC or log-mel frames [rows, frames] with the parameters below and
// normalised per row by the training set's mean and standard deviation.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/audio/features.h"

namespace dsforge::audio {

struct AudioModelConfig {
  std::string arch = "lstm";      // lstm | gru | cnn
  std::string features = "mfcc";  // mfcc | log-mel
  int64_t sample_rate = 16000;
  int64_t clip_samples = 16000;   // the window every clip is centred in
  int64_t n_fft = 400, hop_length = 160, n_mels = 40, n_mfcc = 20;
  int64_t classes = 10;
  int64_t hidden = 128;           // lstm, gru: the state; cnn: the fully connected layer
  int64_t layers = 2;             // lstm, gru
  bool bidirectional = true;
  int64_t width_base = 32;        // cnn: channels of the first stage (the second has twice)
  int64_t token_frames = 8;       // frames pooled into one token of an encoder's output sequence
  double dropout = 0.1;

  int64_t rows() const { return features == "mfcc" ? n_mfcc : n_mels; }
  int64_t frames() const { return 1 + clip_samples / hop_length; }  // centred STFT frames
};

nlohmann::json to_json(const AudioModelConfig& c);
// ConfigError naming `origin` and the field.
AudioModelConfig audio_model_config_from_json(const nlohmann::json& j, const std::string& origin);
// The defaults for an architecture: MFCC for the recurrent nets, log-mel for the CNN.
AudioModelConfig default_audio_model(const std::string& arch, int64_t sample_rate, int64_t clip_samples, int64_t classes);
// ConfigError naming the field for an unknown architecture or feature, or sizes that do not fit.
void validate(const AudioModelConfig& c);
// The feature extractor's settings for the model's input (torchaudio's transforms with these parameters).
FeatureOptions feature_options(const AudioModelConfig& c);
// Forward FLOPs of one clip (multiply-adds x 2), for the table.
double audio_model_flops(const AudioModelConfig& c);

}  // namespace dsforge::audio
