#include "dsforge/vision/models.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>


#include "dsforge/core/error.h"
#include "dsforge/model/baselines.h"
#include "dsforge/model/config.h"
#include "dsforge/model/default_init.h"

namespace dsforge::vision {

nlohmann::json to_json(const ImageModelConfig& c) {
  nlohmann::json j = {{"arch", c.arch}, {"channels", c.channels}, {"height", c.height}, {"width", c.width},
                      {"classes", c.classes}, {"dropout", c.dropout}};
  if (c.arch == "vit") {
    j["patch"] = c.patch;
    j["dim"] = c.dim;
    j["depth"] = c.depth;
    j["heads"] = c.heads;
    j["mlp"] = c.mlp;
  } else {
    j["width_base"] = c.width_base;
    if (c.arch == "cnn") j["hidden"] = c.hidden;
  }
  return j;
}

ImageModelConfig image_model_config_from_json(const nlohmann::json& j, const std::string& origin) {
  ImageModelConfig c;
  try {
    c.arch = j.at("arch").get<std::string>();
    c.channels = j.at("channels").get<int64_t>();
    c.height = j.at("height").get<int64_t>();
    c.width = j.at("width").get<int64_t>();
    c.classes = j.at("classes").get<int64_t>();
    c.dropout = j.value("dropout", c.dropout);
    c.width_base = j.value("width_base", c.width_base);
    c.hidden = j.value("hidden", c.hidden);
    c.patch = j.value("patch", c.patch);
    c.dim = j.value("dim", c.dim);
    c.depth = j.value("depth", c.depth);
    c.heads = j.value("heads", c.heads);
    c.mlp = j.value("mlp", c.mlp);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt(origin, ": image model config: ", e.what()));
  }
  return c;
}

ImageModelConfig default_image_model(const std::string& arch, int64_t channels, int64_t height, int64_t width, int64_t classes) {
  ImageModelConfig c;
  c.arch = arch;
  c.channels = channels;
  c.height = height;
  c.width = width;
  c.classes = classes;
  if (arch == "vit") {
    c.patch = 1;
    for (int64_t p = 1; p <= std::min(height, width); ++p)
      if (height % p == 0 && width % p == 0 && (height / p) * (width / p) >= 16) c.patch = p;
  }
  return c;
}

namespace {

void check(const ImageModelConfig& c) {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw ConfigError(fmt("image model (", c.arch, "): ", what));
  };
  need(c.arch == "cnn" || c.arch == "mobilenet" || c.arch == "vit", "arch must be cnn, mobilenet or vit");
  need(c.channels >= 1 && c.height >= 1 && c.width >= 1, "channels, height and width must be positive");
  need(c.classes >= 2, fmt("classes is ", c.classes, "; need at least 2"));
  need(c.dropout >= 0 && c.dropout < 1, "dropout must be in [0, 1)");
  if (c.arch == "cnn") need(c.height >= 4 && c.width >= 4 && c.width_base >= 1 && c.hidden >= 1, "needs images of at least 4x4 and positive widths");
  if (c.arch == "mobilenet") need(c.height >= 4 && c.width >= 4 && c.width_base >= 1, "needs images of at least 4x4 and a positive width");
  if (c.arch == "vit") {
    need(c.patch >= 1 && c.height % c.patch == 0 && c.width % c.patch == 0,
         fmt("patch ", c.patch, " must divide the image size ", c.height, "x", c.width));
    need(c.dim >= 1 && c.heads >= 1 && c.dim % c.heads == 0, fmt("dim ", c.dim, " must be a multiple of heads ", c.heads));
    need(c.depth >= 1 && c.mlp >= 1, "depth and mlp must be positive");
  }
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t groups = 1, bool bias = true) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).groups(groups).bias(bias));
}

class CnnImpl : public ImageClassifierImpl {
 public:
  explicit CnnImpl(const ImageModelConfig& c) : ImageClassifierImpl(c) {
    const int64_t a = c.width_base, b = 2 * c.width_base;
    c1 = register_module("conv1", conv(c.channels, a, 3));
    c2 = register_module("conv2", conv(a, a, 3));
    c3 = register_module("conv3", conv(a, b, 3));
    c4 = register_module("conv4", conv(b, b, 3));
    fc = register_module("fc", torch::nn::Linear(b * (c.height / 4) * (c.width / 4), c.hidden));
    head = register_module("head", torch::nn::Linear(c.hidden, c.classes));
  }
  at::Tensor trunk(const at::Tensor& x) {
    at::Tensor h = at::max_pool2d(at::relu(c2(at::relu(c1(x)))), {2, 2});
    return at::max_pool2d(at::relu(c4(at::relu(c3(h)))), {2, 2});
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = at::relu(fc(at::dropout(trunk(x).flatten(1), c_.dropout, is_training())));
    return head(at::dropout(h, c_.dropout, is_training()));
  }
  at::Tensor column_features(const at::Tensor& x) override { return trunk(x).mean(2).transpose(1, 2); }
  int64_t feature_dim() const override { return 2 * c_.width_base; }
  void init_weights(uint64_t seed) override { model::default_init(*this, seed); }
  torch::nn::Conv2d c1{nullptr}, c2{nullptr}, c3{nullptr}, c4{nullptr};
  torch::nn::Linear fc{nullptr}, head{nullptr};
};

// conv -> batch norm -> ReLU6.
struct ConvBn : torch::nn::Module {
  ConvBn(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups) {
    c = register_module("conv", conv(in, out, k, stride, groups, /*bias=*/false));
    bn = register_module("bn", torch::nn::BatchNorm2d(out));
  }
  at::Tensor forward(const at::Tensor& x) { return at::hardtanh(bn(c(x)), 0.0, 6.0); }
  torch::nn::Conv2d c{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};

class MobileNetImpl : public ImageClassifierImpl {
 public:
  explicit MobileNetImpl(const ImageModelConfig& c) : ImageClassifierImpl(c) {
    const int64_t w = c.width_base;
    stem = register_module("stem", std::make_shared<ConvBn>(c.channels, w, 3, 1, 1));
    // (out channels, stride) of each depthwise-separable block: two halvings of the resolution.
    const std::vector<std::pair<int64_t, int64_t>> plan = {{2 * w, 1}, {4 * w, 2}, {4 * w, 1}, {8 * w, 2}, {8 * w, 1}};
    int64_t in = w;
    for (size_t i = 0; i < plan.size(); ++i) {
      const auto [out, stride] = plan[i];
      dw.push_back(register_module(fmt("block", i, "_dw"), std::make_shared<ConvBn>(in, in, 3, stride, in)));
      pw.push_back(register_module(fmt("block", i, "_pw"), std::make_shared<ConvBn>(in, out, 1, 1, 1)));
      in = out;
    }
    head = register_module("head", torch::nn::Linear(in, c.classes));
  }
  at::Tensor trunk(const at::Tensor& x) {
    at::Tensor h = stem->forward(x);
    for (size_t i = 0; i < dw.size(); ++i) h = pw[i]->forward(dw[i]->forward(h));
    return h;
  }
  at::Tensor forward(const at::Tensor& x) override { return head(at::dropout(trunk(x).mean({2, 3}), c_.dropout, is_training())); }
  at::Tensor column_features(const at::Tensor& x) override { return trunk(x).mean(2).transpose(1, 2); }
  int64_t feature_dim() const override { return 8 * c_.width_base; }
  void init_weights(uint64_t seed) override { model::default_init(*this, seed); }
  std::shared_ptr<ConvBn> stem;
  std::vector<std::shared_ptr<ConvBn>> dw, pw;
  torch::nn::Linear head{nullptr};
};

class VitImpl : public ImageClassifierImpl {
 public:
  explicit VitImpl(const ImageModelConfig& c) : ImageClassifierImpl(c) {
    const int64_t tokens = (c.height / c.patch) * (c.width / c.patch) + 1;
    patch_embed = register_module("patch_embed", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.channels, c.dim, c.patch).stride(c.patch)));
    cls = register_parameter("cls_token", at::zeros({1, 1, c.dim}));
    pos = register_parameter("pos_embed", at::zeros({1, tokens, c.dim}));
    model::ModelConfig mc;
    mc.hidden_size = c.dim;
    mc.num_attention_heads = c.heads;
    mc.intermediate_size = c.mlp;
    mc.layer_norm_epsilon = 1e-6;
    for (int64_t i = 0; i < c.depth; ++i) {
      blocks.push_back(register_module(fmt("block", i), model::Gpt2Block(mc)));
      blocks.back()->drop.residual = c.dropout;
    }
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim}).eps(1e-6)));
    head = register_module("head", torch::nn::Linear(c.dim, c.classes));
  }
  // [B, 1 + patches, dim] after the blocks and the final norm.
  at::Tensor tokens(const at::Tensor& x) {
    at::Tensor t = patch_embed(x).flatten(2).transpose(1, 2);  // [B, patches, dim], row-major
    t = at::cat({cls.expand({x.size(0), 1, c_.dim}), t}, 1) + pos;
    t = at::dropout(t, c_.dropout, is_training());
    for (auto& b : blocks) t = b->forward(t, at::Tensor());  // no mask: every patch sees every patch
    return norm(t);
  }
  at::Tensor forward(const at::Tensor& x) override { return head(tokens(x).select(1, 0)); }
  at::Tensor column_features(const at::Tensor& x) override {
    const int64_t rows = c_.height / c_.patch, cols = c_.width / c_.patch;
    return tokens(x).narrow(1, 1, rows * cols).view({x.size(0), rows, cols, c_.dim}).mean(1);
  }
  int64_t feature_dim() const override { return c_.dim; }
  // Linear and patch weights N(0, 0.02) with zero biases, positions and class token N(0, 0.02) (as in
  // the ViT reference code); layer norms at 1 and 0.
  void init_weights(uint64_t seed) override {
    at::NoGradGuard ng;
    auto gen = at::detail::createCPUGenerator(seed);
    for (auto& p : named_parameters()) {
      const std::string& n = p.key();
      at::Tensor t = p.value();
      const bool is_norm = n.find("ln_") != std::string::npos || n.rfind("norm.", 0) == 0;
      if (is_norm) t.fill_(n.size() > 6 && n.compare(n.size() - 6, 6, "weight") == 0 ? 1.0 : 0.0);
      else if (t.dim() == 1) t.zero_();
      else t.normal_(0.0, 0.02, gen);
    }
  }
  torch::nn::Conv2d patch_embed{nullptr};
  at::Tensor cls, pos;
  std::vector<model::Gpt2Block> blocks;
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};

}  // namespace

ImageClassifier make_image_model(const ImageModelConfig& c) {
  check(c);
  if (c.arch == "cnn") return std::make_shared<CnnImpl>(c);
  if (c.arch == "mobilenet") return std::make_shared<MobileNetImpl>(c);
  return std::make_shared<VitImpl>(c);
}

double image_model_flops(const ImageModelConfig& c) {
  const double H = static_cast<double>(c.height), W = static_cast<double>(c.width), C = static_cast<double>(c.channels);
  double mac = 0;
  if (c.arch == "cnn") {
    const double a = static_cast<double>(c.width_base), b = 2 * a;
    mac += H * W * 9 * (C * a + a * a);
    mac += (H / 2) * (W / 2) * 9 * (a * b + b * b);
    mac += b * std::floor(H / 4) * std::floor(W / 4) * static_cast<double>(c.hidden) + static_cast<double>(c.hidden * c.classes);
  } else if (c.arch == "mobilenet") {
    const double w = static_cast<double>(c.width_base);
    mac += H * W * 9 * C * w;
    double h = H, wd = W, in = w;
    for (const auto& [out, stride] : std::vector<std::pair<double, int>>{{2 * w, 1}, {4 * w, 2}, {4 * w, 1}, {8 * w, 2}, {8 * w, 1}}) {
      h = std::ceil(h / stride);
      wd = std::ceil(wd / stride);
      mac += h * wd * (9 * in + in * out);
      in = out;
    }
    mac += in * static_cast<double>(c.classes);
  } else {
    const double n = (H / static_cast<double>(c.patch)) * (W / static_cast<double>(c.patch)) + 1, d = static_cast<double>(c.dim);
    mac += (n - 1) * C * static_cast<double>(c.patch * c.patch) * d;
    mac += static_cast<double>(c.depth) * (n * (4 * d * d + 2 * d * static_cast<double>(c.mlp)) + 2 * n * n * d);
    mac += d * static_cast<double>(c.classes);
  }
  return 2 * mac;
}

}  // namespace dsforge::vision
