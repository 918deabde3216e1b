#include "dsforge/compress/calibration.h"

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::compress {

std::vector<int64_t> calibration_ids(const std::string& model_dir, const std::string& path, int64_t max_tokens,
                                     const std::string& what) {
  if (path.empty()) throw ConfigError(what + ": needs --calib FILE (text the statistics are measured on)");
  if (!file_exists(path)) throw ConfigError(fmt("--calib ", path, ": file does not exist"));
  const auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  std::vector<int64_t> ids;
  if (tok.eot_id() >= 0) ids.push_back(tok.eot_id());
  for (int32_t id : tok.encode(read_file(path), false)) {
    if (max_tokens > 0 && static_cast<int64_t>(ids.size()) >= max_tokens) break;
    ids.push_back(id);
  }
  return ids;
}

}  // namespace dsforge::compress
