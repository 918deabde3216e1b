#include "dsforge/pipeline/doctor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "dsforge/core/cpu_allocator.h"
#include "dsforge/core/platform.h"
#include "dsforge/kernels/fused.h"

namespace dsforge::pipeline {
namespace {

// The shared libraries mapped into this process whose file name contains `needle` (after a product
// has run, the BLAS that served it is among them).
std::vector<std::string> mapped_libraries(const std::string& needle) {
  std::vector<std::string> out;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string name = path.substr(path.rfind('/') + 1);
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower.find(needle) != std::string::npos && std::find(out.begin(), out.end(), path) == out.end())
      out.push_back(path);
  }
  return out;
}

double matmul_gflops(int64_t n) {
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  at::Tensor c = at::mm(a, b);  // warm-up
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    c = at::mm(a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * static_cast<double>(n * n * n) / best / 1e9;
}

std::string cpu_extensions() {
  std::string s;
  auto add = [&](const char* name, bool has) {
    if (has) s += (s.empty() ? "" : " ") + std::string(name);
  };
  __builtin_cpu_init();
  add("avx2", __builtin_cpu_supports("avx2"));
  add("fma", __builtin_cpu_supports("fma"));
  add("avx512f", __builtin_cpu_supports("avx512f"));
  add("avx512bw", __builtin_cpu_supports("avx512bw"));
  add("avx512vnni", __builtin_cpu_supports("avx512vnni"));
#if defined(__GNUC__) && __GNUC__ >= 12
  add("avx512bf16", __builtin_cpu_supports("avx512bf16"));
#endif
  return s.empty() ? "none beyond SSE" : s;
}

// One line of at::show_config() that starts with `key` ("  - BLAS_INFO=open"), without the key.
std::string config_value(const std::string& config, const std::string& key) {
  const size_t p = config.find(key);
  if (p == std::string::npos) return "";
  const size_t start = p + key.size(), end = config.find_first_of(",\n", start);
  return config.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

}  // namespace

std::string doctor_report(bool as_json) {
  const std::string config = at::show_config();
  const CpuBudget cpus = usable_cpus();
  const double gflops = matmul_gflops(1024);
  const std::vector<std::string> blas = mapped_libraries("blas");
  const std::vector<std::string> omp = mapped_libraries("omp");
  const bool allocator = core::install_cpu_allocator();
  std::vector<kernels::FastPath> paths = kernels::fast_paths();
  paths.push_back({"caching CPU allocator", allocator,
                   allocator ? "large tensors reuse their pages (DSFORGE_CPU_CACHE_MB)" : "DSFORGE_CPU_CACHE_MB=0"});
  std::string blas_verdict;
  bool openblas = false;
  for (const auto& b : blas) openblas |= b.find("openblas") != std::string::npos;
  if (blas.empty()) blas_verdict = "no BLAS library mapped (an MKL build links it statically)";
  else if (openblas) blas_verdict = "OpenBLAS";
  else blas_verdict = "not OpenBLAS: matmul may be ~30x slower (Debian: apt install libopenblas0-openmp)";
#if defined(USE_C10D_NCCL)
  const bool nccl = true;
#else
  const bool nccl = false;
#endif
  const std::string cuda = at::hasCUDA() ? "yes" : "no";

  if (as_json) {
    nlohmann::ordered_json j;
    j["libtorch"] = TORCH_VERSION;
    j["cuda"] = at::hasCUDA();
    j["nccl"] = nccl;
    j["onednn"] = at::hasMKLDNN();
    j["mkl"] = at::hasMKL();
    j["openmp"] = at::hasOpenMP();
    j["blas_libraries"] = blas;
    j["openblas"] = openblas;
    j["matmul_gflops"] = gflops;
    j["threads"] = at::get_num_threads();
    j["cpus"] = {{"usable", cpus.count}, {"machine", cpus.machine}, {"affinity", cpus.affinity}, {"cgroup_quota", cpus.quota},
                 {"reason", cpus.reason}};
    j["cpu_extensions"] = cpu_extensions();
    j["memory_available_bytes"] = available_memory_bytes();
    nlohmann::ordered_json fp = nlohmann::ordered_json::array();
    for (const auto& p : paths) fp.push_back({{"name", p.name}, {"active", p.active}, {"detail", p.detail}});
    j["fast_paths"] = fp;
    return j.dump(2) + "\n";
  }
  char gf[32];
  std::snprintf(gf, sizeof gf, "%.1f", gflops);
  std::string s;
  auto row = [&](const std::string& k, const std::string& v) { s += k + std::string(k.size() < 33 ? 33 - k.size() : 1, ' ') + v + "\n"; };
  row("libtorch", std::string(TORCH_VERSION) + " (CUDA " + cuda + ", NCCL " + (nccl ? "yes" : "no") + ", oneDNN " +
                      (at::hasMKLDNN() ? "yes" : "no") + ", MKL " + (at::hasMKL() ? "yes" : "no") + ")");
  const std::string blas_info = config_value(config, "BLAS_INFO=");
  row("BLAS", blas_verdict + (blas_info.empty() ? "" : " (built for " + blas_info + ")"));
  for (const auto& b : blas) row("", b);
  row("matmul float32", std::string(gf) + " GFLOP/s (1024^3, best of 5, " + std::to_string(at::get_num_threads()) + " threads)");
  row("OpenMP", at::hasOpenMP() ? (omp.empty() ? "yes" : "yes, " + omp.front()) : "no (ATen runs single-threaded ops)");
  row("CPUs", cpus.reason);
  row("threads", std::to_string(at::get_num_threads()) + " intra-op (run.threads = 0 uses the usable CPUs)");
  row("CPU extensions", cpu_extensions());
  row("memory available", std::to_string(available_memory_bytes() >> 20) + " MiB (MemAvailable and the cgroup limit)");
  s += "fast paths\n";
  for (const auto& p : paths) row("  " + p.name, std::string(p.active ? "on   " : "OFF  ") + p.detail);
  return s;
}

}  // namespace dsforge::pipeline
