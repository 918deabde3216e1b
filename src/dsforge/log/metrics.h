// metrics.jsonl: one JSON object per line, {"step": N, "<name>": value, ...}; the numbers that plots,
// reports, searches and tests read. Appends, so a resumed run continues the same file.
#pragma once
#include <fstream>
#include <map>
#include <string>

namespace dsforge::log {

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  void write(int64_t step, const std::map<std::string, double>& values, const std::string& kind = "train");

 private:
  std::ofstream out_;
};

}  // namespace dsforge::log
