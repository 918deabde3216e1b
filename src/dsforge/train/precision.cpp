#include "dsforge/train/precision.h"

#include <ATen/ATen.h>

#include "dsforge/core/error.h"
#include "dsforge/kernels/compat.h"

namespace dsforge::train {

c10::Device resolve_device(const std::string& spec) {
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "auto") return at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (spec.rfind("cuda", 0) == 0) {
    if (!at::hasCUDA())
      throw ConfigError(fmt("run.device = ", spec, ": this build of libtorch or this machine has no CUDA device; use cpu or auto"));
    return c10::Device(spec);
  }
  throw ConfigError(fmt("run.device: expected cpu, cuda, cuda:N or auto, got '", spec, "'"));
}

c10::ScalarType autocast_dtype(const std::string& precision, c10::Device device) {
  if (precision == "fp32") return at::kFloat;
  if (precision == "bf16") {
    if (!device.is_cpu() && !device.is_cuda())
      throw ConfigError(fmt("train.precision = bf16: autocast supports cpu and cuda devices, not ", device.str()));
    return at::kBFloat16;
  }
  if (precision == "fp16") {
    if (!device.is_cuda())
      throw ConfigError(fmt("train.precision = fp16 needs a CUDA device (this run uses ", device.str(),
                            "); use bf16 on CPU"));
    return at::kHalf;
  }
  throw ConfigError(fmt("train.precision: expected fp32, bf16 or fp16, got '", precision, "'"));
}

AutocastScope::AutocastScope(c10::Device device, c10::ScalarType dtype) : type_(device.type()), prev_dtype_(dtype) {
  if (dtype == at::kFloat) return;
  active_ = true;
  prev_enabled_ = compat::autocast_enabled(type_);
  prev_dtype_ = compat::autocast_dtype(type_);
  compat::set_autocast(type_, true, dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast(type_, prev_enabled_, prev_dtype_);
}

void LossScaler::unscale(const std::vector<at::Tensor>& params) const {
  if (!enabled_) return;
  at::NoGradGuard no_grad;
  for (const auto& p : params)
    if (p.grad().defined()) p.grad().mul_(1.0 / scale_);
}

void LossScaler::update(bool overflow) {
  if (!enabled_) return;
  if (overflow) {
    scale_ = std::max(scale_ * 0.5, 1.0);
    clean_steps_ = 0;
  } else if (++clean_steps_ >= growth_interval_) {
    scale_ *= 2.0;
    clean_steps_ = 0;
  }
}

}  // namespace dsforge::train
