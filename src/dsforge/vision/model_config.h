// The configuration of an image classifier (vision/models.h builds the module), kept free of libtorch
// so that the CLI and the reports can read and print it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace dsforge::vision {

struct ImageModelConfig {
  std::string arch = "cnn";  // cnn | mobilenet | vit
  int64_t channels = 1, height = 28, width = 28, classes = 10;
  int64_t width_base = 32;   // cnn: channels of the first stage (the second has twice); mobilenet: stem width
  int64_t hidden = 128;      // cnn: the fully connected layer
  int64_t patch = 7, dim = 64, depth = 4, heads = 4, mlp = 128;  // vit
  double dropout = 0.1;
};
nlohmann::json to_json(const ImageModelConfig& c);
ImageModelConfig image_model_config_from_json(const nlohmann::json& j, const std::string& origin);
// The defaults for an architecture and input: the ViT's patch is the largest divisor of the side that
// still gives at least 16 patches.
ImageModelConfig default_image_model(const std::string& arch, int64_t channels, int64_t height, int64_t width, int64_t classes);

// Forward FLOPs of one image (multiply-adds x 2), for the table.
double image_model_flops(const ImageModelConfig& c);

}  // namespace dsforge::vision
