#include "dsforge/audio/models.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/rnn.h>

#include "dsforge/model/default_init.h"

namespace dsforge::audio {
namespace {

// [B, T, D] -> [B, ceil(T / w), D]: the mean of each window of w steps (the last may be shorter).
at::Tensor pool_time(const at::Tensor& h, int64_t w) {
  if (w == 1) return h;
  return at::avg_pool1d(h.transpose(1, 2), {w}, {w}, {0}, /*ceil_mode=*/true, /*count_include_pad=*/false).transpose(1, 2);
}

class RecurrentImpl : public AudioClassifierImpl {
 public:
  explicit RecurrentImpl(const AudioModelConfig& c) : AudioClassifierImpl(c) {
    const double between = c.layers > 1 ? c.dropout : 0.0;
    if (c.arch == "lstm")
      lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(c.rows(), c.hidden)
                                                         .num_layers(c.layers)
                                                         .batch_first(true)
                                                         .bidirectional(c.bidirectional)
                                                         .dropout(between)));
    else
      gru = register_module("gru", torch::nn::GRU(torch::nn::GRUOptions(c.rows(), c.hidden)
                                                      .num_layers(c.layers)
                                                      .batch_first(true)
                                                      .bidirectional(c.bidirectional)
                                                      .dropout(between)));
    head = register_module("head", torch::nn::Linear(feature_dim(), c.classes));
  }
  // [B, frames, hidden x directions]
  at::Tensor outputs(const at::Tensor& x) {
    const at::Tensor seq = x.transpose(1, 2).contiguous();  // [B, frames, rows]
    return lstm ? std::get<0>(lstm->forward(seq)) : std::get<0>(gru->forward(seq));
  }
  at::Tensor forward(const at::Tensor& x) override {
    return head(at::dropout(outputs(x).mean(1), c_.dropout, is_training()));
  }
  at::Tensor sequence_features(const at::Tensor& x) override { return pool_time(outputs(x), c_.token_frames); }
  int64_t feature_dim() const override { return c_.hidden * (c_.bidirectional ? 2 : 1); }
  void init_weights(uint64_t seed) override { model::default_init(*this, seed); }
  torch::nn::LSTM lstm{nullptr};
  torch::nn::GRU gru{nullptr};
  torch::nn::Linear head{nullptr};
};

class CnnImpl : public AudioClassifierImpl {
 public:
  static constexpr int64_t kFreqBins = 4, kTimeBins = 8;
  explicit CnnImpl(const AudioModelConfig& c) : AudioClassifierImpl(c) {
    const int64_t a = c.width_base, b = 2 * c.width_base;
    auto conv = [](int64_t in, int64_t out) {
      return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false));
    };
    c1 = register_module("conv1", conv(1, a));
    n1 = register_module("norm1", torch::nn::BatchNorm2d(a));
    c2 = register_module("conv2", conv(a, a));
    n2 = register_module("norm2", torch::nn::BatchNorm2d(a));
    c3 = register_module("conv3", conv(a, b));
    n3 = register_module("norm3", torch::nn::BatchNorm2d(b));
    c4 = register_module("conv4", conv(b, b));
    n4 = register_module("norm4", torch::nn::BatchNorm2d(b));
    fc = register_module("fc", torch::nn::Linear(b * kFreqBins * kTimeBins, c.hidden));
    head = register_module("head", torch::nn::Linear(c.hidden, c.classes));
  }
  // [B, 2 x width_base, rows / 4, frames / 4]
  at::Tensor trunk(const at::Tensor& x) {
    at::Tensor h = x.unsqueeze(1);
    h = at::max_pool2d(at::relu(n2(c2(at::relu(n1(c1(h)))))), {2, 2});
    return at::max_pool2d(at::relu(n4(c4(at::relu(n3(c3(h)))))), {2, 2});
  }
  // The feature map pooled to a coarse grid keeps where in time and frequency the energy is (a global
  // average alone loses the order of the sounds: 40 words stayed near chance).
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = at::adaptive_avg_pool2d(trunk(x), {kFreqBins, kTimeBins}).flatten(1);
    h = at::relu(fc(at::dropout(h, c_.dropout, is_training())));
    return head(at::dropout(h, c_.dropout, is_training()));
  }
  at::Tensor sequence_features(const at::Tensor& x) override {
    return pool_time(trunk(x).mean(2).transpose(1, 2), std::max<int64_t>(1, c_.token_frames / 4));
  }
  int64_t feature_dim() const override { return 2 * c_.width_base; }
  void init_weights(uint64_t seed) override { model::default_init(*this, seed); }
  torch::nn::Conv2d c1{nullptr}, c2{nullptr}, c3{nullptr}, c4{nullptr};
  torch::nn::BatchNorm2d n1{nullptr}, n2{nullptr}, n3{nullptr}, n4{nullptr};
  torch::nn::Linear fc{nullptr}, head{nullptr};
};

}  // namespace

AudioClassifier make_audio_model(const AudioModelConfig& c) {
  validate(c);
  if (c.arch == "cnn") return std::make_shared<CnnImpl>(c);
  return std::make_shared<RecurrentImpl>(c);
}

}  // namespace dsforge::audio
