// GGUF v3 files for llama.cpp: a writer and a reader (export_gguf in export.h uses them). Layout, keys
// and tensor names: ../shared/DEEPSEEK.md §4 (everything is little-endian).
//
//   GgufWriter w;
//   w.set("general.architecture", std::string("gpt2"));
//   w.add_tensor("token_embd.weight", emb, GgmlType::Q8_0);
//   w.write("model.gguf");
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "dsforge/deploy/export.h"

namespace dsforge::deploy {

// q8_0: blocks of 32 values, one f16 scale d = max|x| / 127 and 32 int8 q = round(x / d).
constexpr int64_t kQ8Block = 32;
constexpr size_t kQ8BlockBytes = 2 + kQ8Block;
// Quantises `n` floats (n a multiple of 32) into n / 32 blocks; `out` holds n / 32 * 34 bytes.
void quantize_q8_0(const float* x, int64_t n, uint8_t* out);
void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out);

// A metadata value: the GGUF value type is the C++ type (u32, i32, f32, bool, string, arrays).
using GgufValue = std::variant<uint32_t, int32_t, float, bool, std::string, std::vector<std::string>,
                               std::vector<int32_t>, std::vector<float>>;

class GgufWriter {
 public:
  void set(const std::string& key, GgufValue value);
  // `t` in PyTorch shape (row-major); GGUF stores the dimensions reversed. The data is converted to
  // `type` when written; a tensor whose row length is not a multiple of 32 cannot be q8_0 (throws).
  void add_tensor(const std::string& name, const at::Tensor& t, GgmlType type);
  // Writes the file atomically; tensors are converted one at a time (memory stays near the largest one).
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    at::Tensor tensor;
    GgmlType type;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Entry> tensors_;
};

// What a reader sees: for tests and `dsforge model info`-style checks.
struct GgufTensorInfo {
  std::vector<int64_t> ne;  // ggml order (fastest first)
  GgmlType type;
  uint64_t offset = 0;      // from the start of the data section
};
struct GgufFile {
  uint32_t version = 0;
  std::map<std::string, GgufValue> kv;
  std::map<std::string, GgufTensorInfo> tensors;
  std::vector<std::string> tensor_order;
  std::string data;  // the data section
  // The tensor as float32 in PyTorch shape (dequantised when q8_0).
  at::Tensor tensor(const std::string& name) const;
};
// Throws CheckpointError naming the file and what is wrong (magic, version, a truncated section).
GgufFile read_gguf(const std::string& path);

}  // namespace dsforge::deploy
