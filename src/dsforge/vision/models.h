// Image classifiers: a small CNN (two conv-conv-pool stages, LeCun et al. 1998 in today's form), a
// lightweight depthwise-separable net (MobileNet, Howard et al. 2017: 3x3 depthwise + 1x1 pointwise,
// batch norm, ReLU6) and a Vision Transformer (Dosovitskiy et al. 2021: non-overlapping patches
// embedded by one strided convolution, a class token, learned positions, then the same GPT-2 blocks the
// language models use, unmasked). Inputs are normalised images [B, C, H, W]; outputs are logits.
//
//   ImageModelConfig c = default_image_model("vit", 1, 28, 28, 10);
//   ImageClassifier m = make_image_model(c);
//   at::Tensor logits = m->forward(x);
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>

#include "dsforge/vision/model_config.h"

namespace dsforge::vision {

class ImageClassifierImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // One feature vector per image column band [B, columns, feature_dim()]: the encoder's last feature map
  // averaged over its height (CNN, MobileNet: width / 4 columns; ViT: width / patch). A multimodal model
  // reads these as its image tokens, left to right.
  virtual at::Tensor column_features(const at::Tensor& x) = 0;
  virtual int64_t feature_dim() const = 0;
  // PyTorch's default initialisation of every layer, drawn from `seed`.
  virtual void init_weights(uint64_t seed) = 0;
  const ImageModelConfig& config() const { return c_; }

 protected:
  explicit ImageClassifierImpl(ImageModelConfig c) : c_(std::move(c)) {}
  ImageModelConfig c_;
};
using ImageClassifier = std::shared_ptr<ImageClassifierImpl>;

// ConfigError naming the field for an unknown architecture or shapes that do not fit.
ImageClassifier make_image_model(const ImageModelConfig& c);

}  // namespace dsforge::vision
