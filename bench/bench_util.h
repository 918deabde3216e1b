// Timing and peak-memory helpers for the benchmarks. Peak RSS is per phase: reset_peak_rss()
// clears the kernel's high-water mark (VmHWM) so each measured phase reports its own peak.
#pragma once
#include <chrono>
#include <cstdio>
#include <fstream>
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

}  // namespace dsforge::bench
