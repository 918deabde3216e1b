// Mixed precision for training: autocast regions and dynamic loss scaling.
//
// bf16 keeps float32 master weights; inside an AutocastScope, matrix products run in bf16 (the cast
// of each weight is cached for the scope, so a weight is converted once per step, not once per use)
// and reductions such as the loss stay float32. fp16 (CUDA only) also needs a LossScaler: the loss is
// multiplied by a large factor before backward so small gradients do not flush to zero, gradients
// are divided by it before clipping, and a step whose gradients overflow is skipped and the factor
// halved; after `growth_interval` clean steps it doubles.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <vector>

namespace dsforge::train {

// "cpu", "cuda", "cuda:N" or "auto" (CUDA when this libtorch and machine have it); throws ConfigError
// naming run.device when CUDA is asked for and absent.
c10::Device resolve_device(const std::string& spec);

// "fp32" -> Float, "bf16" -> BFloat16, "fp16" -> Half; throws ConfigError naming train.precision
// when the device cannot run it (fp16 autocast exists on CUDA only).
c10::ScalarType autocast_dtype(const std::string& precision, c10::Device device);

// Enables autocast for `device` with `dtype` for the scope's lifetime (no-op for Float); the cast
// cache is cleared when the outermost scope ends.
class AutocastScope {
 public:
  AutocastScope(c10::Device device, c10::ScalarType dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType type_;
  bool active_ = false, prev_enabled_ = false;
  c10::ScalarType prev_dtype_;
};

class LossScaler {
 public:
  explicit LossScaler(bool enabled, double init_scale = 65536.0, int64_t growth_interval = 2000)
      : enabled_(enabled), scale_(enabled ? init_scale : 1.0), growth_interval_(growth_interval) {}
  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  at::Tensor scale_loss(const at::Tensor& loss) const { return enabled_ ? loss * scale_ : loss; }
  // Divides every gradient by the scale (before clipping; a non-finite gradient norm then marks overflow).
  void unscale(const std::vector<at::Tensor>& params) const;
  // After each step: halve on overflow, double after growth_interval clean steps.
  void update(bool overflow);
  int64_t clean_steps() const { return clean_steps_; }
  void restore(double scale, int64_t clean_steps) { scale_ = scale; clean_steps_ = clean_steps; }

 private:
  bool enabled_;
  double scale_;
  int64_t growth_interval_, clean_steps_ = 0;
};

}  // namespace dsforge::train
