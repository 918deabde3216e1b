#include "dsforge/model/default_init.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/rnn.h>

#include <mutex>

namespace dsforge::model {

void default_init(torch::nn::Module& root, uint64_t seed) {
  auto gen = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  // (the layers' reset_parameters draw from the default generator and take its lock themselves)
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* l = m->as<torch::nn::Linear>()) l->reset_parameters();
    else if (auto* c2 = m->as<torch::nn::Conv2d>()) c2->reset_parameters();
    else if (auto* c1 = m->as<torch::nn::Conv1d>()) c1->reset_parameters();
    else if (auto* b2 = m->as<torch::nn::BatchNorm2d>()) b2->reset_parameters();
    else if (auto* b1 = m->as<torch::nn::BatchNorm1d>()) b1->reset_parameters();
    else if (auto* ln = m->as<torch::nn::LayerNorm>()) ln->reset_parameters();
    else if (auto* e = m->as<torch::nn::Embedding>()) e->reset_parameters();
    else if (auto* lstm = m->as<torch::nn::LSTM>()) lstm->reset_parameters();
    else if (auto* gru = m->as<torch::nn::GRU>()) gru->reset_parameters();
  }
}

}  // namespace dsforge::model
