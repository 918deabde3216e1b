// Exports of a dsforge model folder for other tools (light header: the CLI includes it).
//
// Hugging Face: a model folder with config.json holding the fields
// transformers reads, generation_config.json, weights as safetensors (sharded above a size, with
// model.safetensors.index.json), tokenizer.json, tokenizer_config.json and special_tokens_map.json.
// GPT-2 weights are written in GPT-2's own layout (Conv1D: [in, out]). model::load_pretrained reads
// such a folder back, sharded and bf16/f16 included.
// GGUF v3 for llama.cpp (gguf.h has the writer and reader): DeepSeek-V3 as `deepseek2`, GPT-2 as `gpt2`,
// the tokenizer embedded.
//
//   deploy::export_hf("runs/quickstart/model", "exported", {"bf16", 5'000'000'000});
//   deploy::export_gguf("runs/quickstart/model", "model.gguf", deploy::GgmlType::Q8_0);
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsforge::deploy {

struct HfExportOptions {
  std::string dtype = "f32";             // f32 | bf16 | f16 (the routing bias stays f32)
  uint64_t max_shard_bytes = 5'000'000'000;
};

struct HfExportReport {
  std::vector<std::string> files;  // written, in order
  uint64_t weight_bytes = 0;
  int shards = 0;
};

// Writes `out_dir` whole or not at all (staged beside it, then renamed); refuses an existing non-empty
// `out_dir`. Throws ConfigError for a bad dtype or a model folder without tokenizer.json.
HfExportReport export_hf(const std::string& model_dir, const std::string& out_dir, const HfExportOptions& opts);

// The tensor types dsforge writes (ggml's numbering).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };
// "f32" | "f16" | "bf16" | "q8_0"; throws ConfigError naming the accepted names otherwise.
GgmlType parse_ggml_type(const std::string& name);
const char* ggml_type_name(GgmlType t);

// DeepSeek-V3 -> `deepseek2` in the MLA layout (attn_k_b / attn_v_b), the MTP modules left out (llama.cpp
// does not run them); GPT-2 -> `gpt2`. 1-D tensors (norms, biases, the routing bias) stay F32 whatever
// `type` says; q8_0 falls back to F16 for a matrix whose rows are not a multiple of 32 (said in `notes`).
struct GgufExportReport {
  std::string architecture;
  int64_t tensors = 0;
  uint64_t bytes = 0;
  std::vector<std::string> notes;
};
GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path, GgmlType type);

// The other way: a GGUF file dsforge can run (deepseek2 or gpt2, the tensor layout export_gguf writes;
// q8_0/f16/bf16 tensors dequantised to f32) written as a dsforge model folder with its tokenizer.
// Throws CheckpointError naming the file and the missing key or tensor.
void import_gguf(const std::string& gguf_path, const std::string& out_dir);

// "5GB", "500MB", "64KB", "1000" (bytes); decimal units as Hugging Face uses them, "GiB"/"MiB"/"KiB" binary.
uint64_t parse_byte_size(const std::string& text);

}  // namespace dsforge::deploy
