#include "dsforge/log/metrics.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"

namespace dsforge::log {

MetricsWriter::MetricsWriter(const std::string& path) : out_(path, std::ios::app) {
  if (!out_) throw IoError(fmt(path, ": cannot open for appending"));
}

void MetricsWriter::write(int64_t step, const std::map<std::string, double>& values, const std::string& kind) {
  nlohmann::ordered_json j;
  j["kind"] = kind;
  j["step"] = step;
  for (const auto& [k, v] : values) {
    if (std::isfinite(v)) j[k] = v;
    else j[k] = nullptr;  // JSON has no NaN/Inf
  }
  out_ << j.dump() << "\n";
  out_.flush();
}

void MetricsWriter::write_raw(const std::string& json_object) {
  out_ << json_object << "\n";
  out_.flush();
}

}  // namespace dsforge::log
