// Prints the float32 GFLOP/s of a 1024^3 matrix product through libtorch (best of 5).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <chrono>
#include <cstdio>
#include <thread>

int main() {
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  const int64_t n = 1024;
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  at::Tensor c = at::mm(a, b);  // warm-up
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    c = at::mm(a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("%.1f\n", 2.0 * n * n * n / best / 1e9);
  return 0;
}
