// What a person watching training sees: one self-updating line on a terminal (step, loss, lr,
// gradient norm, tokens/s, model FLOPs utilisation, ETA), nothing extra when stderr is a file or a
// pipe (the trainer's plain log lines every train.log_every steps are the record there).
//
// MFU = achieved model FLOP/s over the machine's matrix-product peak, which measure_matmul_gflops()
// measures rather than assumes: a square matmul timed on the training device and dtype.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace dsforge::train {

// Best GFLOP/s of an n x n x n matrix product over ~0.3 s.
double measure_matmul_gflops(c10::Device device, c10::ScalarType dtype, int64_t n = 1024);

struct ProgressStats {
  int64_t step = 0, max_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_sec = 0, mfu = 0, eta_s = 0;
};
std::string format_progress(const ProgressStats& s);  // the line, without control characters
std::string format_duration(double seconds);          // "1h02m", "3m05s", "42s"

class ProgressLine {
 public:
  ProgressLine();  // enabled when stderr is a terminal and DSFORGE_PROGRESS is not 0
  bool enabled() const { return enabled_; }
  void update(const ProgressStats& s);  // redraws at most 5 times a second
  void clear();                          // erases the line so a log line can be printed
  ~ProgressLine();

 private:
  bool enabled_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace dsforge::train
