// Timing and peak-memory helpers for the benchmarks. Peak RSS is per phase: reset_peak_rss()
// clears the kernel's high-water mark (VmHWM) so each measured phase reports its own peak.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

namespace dsforge::bench {

inline void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

inline double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "VmHWM:") {
      double kb = 0;
      f >> kb;
      return kb / 1024.0;
    }
  }
  return 0;
}

// A command run under /bin/sh with its output in out_file (stderr in out_file.err): exit code, output,
// and the peak RSS of the process tree's largest member (wait4's ru_maxrss; sh itself is tiny).
struct Child {
  int code = -1;
  double peak_mb = 0;
  std::string out;
};
inline Child run_child(const std::string& cmd, const std::string& out_file) {
  Child c;
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", (cmd + " >" + out_file + " 2>" + out_file + ".err").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  c.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  c.peak_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;
  std::ifstream in(out_file);
  c.out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return c;
}

template <typename F>
double seconds(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The median of three timings of f, in seconds.
template <typename F>
double median3(F&& f) {
  double t[3];
  for (double& x : t) x = seconds(f);
  if (t[0] > t[1]) std::swap(t[0], t[1]);
  if (t[1] > t[2]) std::swap(t[1], t[2]);
  if (t[0] > t[1]) std::swap(t[0], t[1]);
  return t[1];
}

// The last value of `key` in a metrics.jsonl file (the trainer's log): 0 when it never appears.
inline double last_metric(const std::string& metrics, const std::string& key) {
  std::ifstream in(metrics);
  std::string line;
  double v = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains(key)) v = j[key].get<double>();
  }
  return v;
}

}  // namespace dsforge::bench
