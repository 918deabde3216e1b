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
  // One prepared JSON object (a line without the newline), for records that are not flat numbers.
  void write_raw(const std::string& json_object);

 private:
  std::ofstream out_;
};

}  // namespace dsforge::log
