// PyTorch's default initialisation of every layer of a module (each layer's reset_parameters: Kaiming-
// uniform linear and convolution weights, uniform(+-1/sqrt(hidden)) recurrent weights, unit norms),
// drawn from `seed` through libtorch's default generator, so the same seed gives the same weights.
#pragma once
#include <cstdint>

namespace torch::nn {
class Module;
}

namespace dsforge::model {

// Linear, Conv1d/Conv2d, BatchNorm1d/2d, LayerNorm, Embedding, LSTM and GRU layers below `root`.
void default_init(torch::nn::Module& root, uint64_t seed);

}  // namespace dsforge::model
