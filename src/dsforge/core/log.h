// Human log lines, one fixed format: "[dsforge HH:MM:SS] message". Numbers meant for plots and tests
// go to metrics.jsonl / TensorBoard instead (log/metrics.h), never parsed back from these lines.
#pragma once
#include <string>

#include "dsforge/core/error.h"

namespace dsforge {

void log_line(const std::string& msg);
// Silences log_line (tests, --quiet).
void set_log_quiet(bool quiet);

template <typename... Args>
void log_info(const Args&... args) {
  log_line(fmt(args...));
}

}  // namespace dsforge
