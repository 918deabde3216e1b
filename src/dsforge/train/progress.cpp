#include "dsforge/train/progress.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace dsforge::train {

double measure_matmul_gflops(c10::Device device, c10::ScalarType dtype, int64_t n) {
  at::NoGradGuard no_grad;
  // A private generator: measuring must not move the random stream training depends on.
  auto gen = at::detail::createCPUGenerator(0);
  auto opts = at::TensorOptions().device(device).dtype(dtype);
  at::Tensor a = at::randn({n, n}, gen, at::kFloat).to(opts), b = at::randn({n, n}, gen, at::kFloat).to(opts);
  at::Tensor c = at::empty({n, n}, opts);
  at::mm_out(c, a, b);  // warm-up (thread pool, packing buffers)
  double best = 0;
  const auto t_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < t_end) {
    const auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    c.sum().item<double>();  // synchronises asynchronous devices
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(n * n * n) / dt / 1e9);
  }
  return best;
}

std::string format_duration(double s) {
  char buf[32];
  const auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(t / 3600), static_cast<long long>(t % 3600 / 60));
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  else std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(t));
  return buf;
}

std::string format_progress(const ProgressStats& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld  step loss %.4f  lr %.2e  gnorm %.3f  %.0f tok/s  MFU %.1f%%  ETA %s",
                static_cast<long long>(s.step), static_cast<long long>(s.max_steps), s.loss, s.lr, s.grad_norm,
                s.tokens_per_sec, 100.0 * s.mfu, format_duration(s.eta_s).c_str());
  return buf;
}

ProgressLine::ProgressLine() {
  const char* env = std::getenv("DSFORGE_PROGRESS");
  enabled_ = isatty(STDERR_FILENO) && !(env && std::string(env) == "0");
}

void ProgressLine::update(const ProgressStats& s) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(200) && s.step != s.max_steps) return;
  last_ = now;
  std::fprintf(stderr, "\r\033[K%s", format_progress(s).c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressLine::clear() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

ProgressLine::~ProgressLine() { clear(); }

}  // namespace dsforge::train
