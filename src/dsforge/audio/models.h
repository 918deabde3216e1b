// Audio classifiers over feature frames [B, rows, frames] (audio/model_config.h): a recurrent net, LSTM
// (Hochreiter & Schmidhuber 1997) or GRU (Cho et al. 2014), stacked and bidirectional, read over MFCC
// frames and mean-pooled over time; and a small CNN over the log-mel image (two conv-conv-pool stages
// with batch norm, the map pooled to a 4 x 8 grid of frequency and time, a hidden layer). Outputs are logits.
// Each also gives a sequence of feature vectors, one per `token_frames` frames, that a multimodal model
// reads as its audio tokens (vision/multimodal.h).
//
//   AudioClassifier m = make_audio_model(default_audio_model("lstm", 16000, 20000, 40));
//   at::Tensor logits = m->forward(features);   // [B, classes]
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <memory>

#include "dsforge/audio/model_config.h"

namespace dsforge::audio {

class AudioClassifierImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // [B, ceil(time steps / token_frames), feature_dim()]: the encoder's output over time, average-pooled
  // in windows (the CNN's time axis is frames / 4 after its pooling).
  virtual at::Tensor sequence_features(const at::Tensor& x) = 0;
  virtual int64_t feature_dim() const = 0;
  // PyTorch's default initialisation of every layer, drawn from `seed`.
  virtual void init_weights(uint64_t seed) = 0;
  const AudioModelConfig& config() const { return c_; }

 protected:
  explicit AudioClassifierImpl(AudioModelConfig c) : c_(std::move(c)) {}
  AudioModelConfig c_;
};
using AudioClassifier = std::shared_ptr<AudioClassifierImpl>;

// validate(c), then the module.
AudioClassifier make_audio_model(const AudioModelConfig& c);

}  // namespace dsforge::audio
