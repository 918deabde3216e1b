// safetensors reader/writer (the Hugging Face format: u64 header length, JSON header, raw data).
//
// Files we write carry a CRC-32C of the data section in __metadata__["dsforge.crc32c"]; reading
// verifies it when present, and always validates the header against the file size, so a truncated
// or corrupt checkpoint is refused with a message naming the file and the tensor.
//
//   TensorMap t{{"w", at::ones({2, 3})}};
//   save_safetensors("m.safetensors", t, {{"format", "pt"}});
//   auto loaded = load_safetensors("m.safetensors");   // loaded.tensors.at("w")
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace dsforge {

using TensorMap = std::map<std::string, at::Tensor>;

struct SafetensorsFile {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;
};

// Serialises to bytes (tensors are made contiguous and copied to CPU).
std::string encode_safetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata = {});
SafetensorsFile decode_safetensors(const std::string& bytes, const std::string& origin);

// Atomic write (temp + fsync + rename).
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace dsforge
