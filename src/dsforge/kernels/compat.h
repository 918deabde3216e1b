// Every libtorch-version difference dsforge depends on, in one place: each `#if TORCH_VERSION_*` of the
// source tree lives here, behind a function that means the same on every version. Supported: Debian's
// libtorch 1.13.1 and newer builds through CMAKE_PREFIX_PATH.
//
//   libtorch 2.4 folded the per-device autocast queries and setters (is_cpu_enabled,
//   get_autocast_cpu_dtype, set_cpu_enabled, ...) into device-typed ones (is_autocast_enabled(t), ...).
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define DSFORGE_AUTOCAST_DEVICE_API 1
#endif

namespace dsforge::compat {

// Whether autocast is on for device type t, and its dtype.
inline bool autocast_enabled(c10::DeviceType t) {
#ifdef DSFORGE_AUTOCAST_DEVICE_API
  return at::autocast::is_autocast_enabled(t);
#else
  return t == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

inline c10::ScalarType autocast_dtype(c10::DeviceType t) {
#ifdef DSFORGE_AUTOCAST_DEVICE_API
  return at::autocast::get_autocast_dtype(t);
#else
  return t == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
}

// Turns autocast on or off for device type t (CPU, or CUDA for any other) with the given dtype.
inline void set_autocast(c10::DeviceType t, bool on, c10::ScalarType dtype) {
#ifdef DSFORGE_AUTOCAST_DEVICE_API
  at::autocast::set_autocast_dtype(t, dtype);
  at::autocast::set_autocast_enabled(t, on);
#else
  if (t == c10::DeviceType::CPU) {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(on);
  } else {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(on);
  }
#endif
}

}  // namespace dsforge::compat
