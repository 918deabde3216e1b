// `dsforge model info` and `dsforge model logits` as library calls (no libtorch in this header).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsforge::pipeline {

// `source`: a config.json, a model folder holding one, or a preset name (nano, micro, mini).
std::string model_info_report(const std::string& source, int64_t seq_len, bool as_json);

// Writes the float32 logits of `tokens` under the model in `checkpoint_dir` to a safetensors file:
// tensor "logits" [T, vocab], plus "mtp_logits" [T - 1, vocab] (depth 1) when the model has MTP.
void export_logits(const std::string& checkpoint_dir, const std::vector<int64_t>& tokens, const std::string& out_path);

}  // namespace dsforge::pipeline
