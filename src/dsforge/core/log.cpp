#include "dsforge/core/log.h"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace dsforge {
namespace {
std::atomic<bool> g_quiet{false};
std::mutex g_mutex;
}  // namespace

void set_log_quiet(bool quiet) { g_quiet = quiet; }

void log_line(const std::string& msg) {
  if (g_quiet) return;
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[16];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stdout, "[dsforge %s] %s\n", stamp, msg.c_str());
  std::fflush(stdout);
}

}  // namespace dsforge
