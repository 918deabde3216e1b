// Calibration text as token ids, shared by `prune --calib` (router statistics) and `quantize --calib`
// (static activation scales): an end-of-text token (the context every training document starts from),
// then the file encoded with the model folder's tokenizer, cut to `max_tokens` (0 = all).
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsforge::compress {

// ConfigError when `path` is empty or missing (naming `what`, e.g. "prune --method experts").
std::vector<int64_t> calibration_ids(const std::string& model_dir, const std::string& path, int64_t max_tokens,
                                     const std::string& what);

}  // namespace dsforge::compress
