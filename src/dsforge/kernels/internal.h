// Shared by the kernel families' files (elementwise.cpp, attention.cpp, experts.cpp, optimizer.cpp), not
// by callers: the fast-path check, raw storage access, and vec::, the vector loops of the instruction set
// chosen at start (vec.h, platform.h) as overloads on float / bfloat16 (uint16_t) storage, so the
// autograd functions stay generic over the element type.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "dsforge/kernels/fused.h"
#include "dsforge/kernels/platform.h"
#include "dsforge/kernels/vec.h"

#include <cstdint>
#include <initializer_list>

namespace dsforge::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 16384;  // elements per parallel chunk

// Whether a kernel's fast path applies: fused kernels on, every tensor defined, CPU, contiguous and
// float32 (or, for the kernels that take it, all bfloat16).
inline bool fast_path(std::initializer_list<const at::Tensor*> ts, bool allow_bf16 = false) {
  if (!fused_enabled()) return false;
  const at::Tensor* first = *ts.begin();
  if (!first->defined()) return false;
  const auto dt = first->scalar_type();
  if (dt != at::kFloat && !(allow_bf16 && dt == at::kBFloat16)) return false;
  for (const at::Tensor* t : ts)
    if (!t->defined() || t->scalar_type() != dt || !t->device().is_cpu() || !t->is_contiguous()) return false;
  return true;
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// Runs f(T{}) with T = float or uint16_t (bfloat16 bits) for t's dtype.
template <typename F>
void dispatch_storage(const at::Tensor& t, F&& f) {
  if (t.scalar_type() == at::kBFloat16) f(uint16_t{});
  else f(float{});
}

namespace vec {
using bf16 = uint16_t;

inline double cross_entropy_row(const float* x, float* g, float* e_buf, int64_t V, int64_t target, float eps, float inv_n) {
  return vector_loops().cross_entropy_row_f32(x, g, e_buf, V, target, eps, inv_n);
}
inline double cross_entropy_row(const bf16* x, bf16* g, float* e_buf, int64_t V, int64_t target, float eps, float inv_n) {
  return vector_loops().cross_entropy_row_bf16(x, g, e_buf, V, target, eps, inv_n);
}
inline void gelu_forward(const float* x, float* y, int64_t b, int64_t e) { vector_loops().gelu_forward_f32(x, y, b, e); }
inline void gelu_forward(const bf16* x, bf16* y, int64_t b, int64_t e) { vector_loops().gelu_forward_bf16(x, y, b, e); }
inline void gelu_backward(const float* x, const float* dy, float* dx, int64_t b, int64_t e) {
  vector_loops().gelu_backward_f32(x, dy, dx, b, e);
}
inline void gelu_backward(const bf16* x, const bf16* dy, bf16* dx, int64_t b, int64_t e) {
  vector_loops().gelu_backward_bf16(x, dy, dx, b, e);
}
inline void silu_mul_forward(const float* g, const float* u, float* y, int64_t b, int64_t e) {
  vector_loops().silu_mul_forward_f32(g, u, y, b, e);
}
inline void silu_mul_forward(const bf16* g, const bf16* u, bf16* y, int64_t b, int64_t e) {
  vector_loops().silu_mul_forward_bf16(g, u, y, b, e);
}
inline void silu_mul_forward(const float* g, const float* u, bf16* y, int64_t b, int64_t e) {
  vector_loops().silu_mul_forward_f32_to_bf16(g, u, y, b, e);
}
inline void silu_mul_backward(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t b, int64_t e) {
  vector_loops().silu_mul_backward_f32(g, u, dy, dg, du, b, e);
}
inline void silu_mul_backward(const bf16* g, const bf16* u, const bf16* dy, bf16* dg, bf16* du, int64_t b, int64_t e) {
  vector_loops().silu_mul_backward_bf16(g, u, dy, dg, du, b, e);
}
inline void silu_mul_backward(const float* g, const float* u, const float* dy, bf16* dg, bf16* du, int64_t b, int64_t e) {
  vector_loops().silu_mul_backward_f32_to_bf16(g, u, dy, dg, du, b, e);
}
inline void rms_norm_rows(const float* x, const float* w, float* y, float* r, int64_t d, float eps, int64_t b, int64_t e) {
  vector_loops().rms_norm_rows_f32(x, w, y, r, d, eps, b, e);
}
inline void rms_norm_rows(const bf16* x, const float* w, bf16* y, float* r, int64_t d, float eps, int64_t b, int64_t e) {
  vector_loops().rms_norm_rows_bf16(x, w, y, r, d, eps, b, e);
}
inline void rms_norm_backward_rows(const float* x, const float* w, const float* r, const float* dy, float* dx, float* pw,
                                   int64_t d, int64_t b, int64_t e) {
  vector_loops().rms_norm_backward_rows_f32(x, w, r, dy, dx, pw, d, b, e);
}
inline void rms_norm_backward_rows(const bf16* x, const float* w, const float* r, const bf16* dy, bf16* dx, float* pw,
                                   int64_t d, int64_t b, int64_t e) {
  vector_loops().rms_norm_backward_rows_bf16(x, w, r, dy, dx, pw, d, b, e);
}
inline void softmax_row(float* x, float* y, int64_t n, int64_t T, float sc) { vector_loops().softmax_row_f32(x, y, n, T, sc); }
inline void softmax_row(float* x, bf16* y, int64_t n, int64_t T, float sc) { vector_loops().softmax_row_bf16(x, y, n, T, sc); }
inline void softmax_row_backward(const float* y, const float* dy, float* dx, int64_t n, int64_t T, float sc) {
  vector_loops().softmax_row_backward_f32(y, dy, dx, n, T, sc);
}
inline void softmax_row_backward(const bf16* y, const float* dy, bf16* dx, int64_t n, int64_t T, float sc) {
  vector_loops().softmax_row_backward_bf16(y, dy, dx, n, T, sc);
}
// rows x cols float32 results (leading dimension ldf) into T storage (leading dimension ldt); the float
// form exists for the generic code and is never on a hot path (float32 kernels write in place).
inline void store_rows(const float* f, int64_t ldf, float* t, int64_t ldt, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) t[r * ldt + j] = f[r * ldf + j];
}
inline void store_rows(const float* f, int64_t ldf, bf16* t, int64_t ldt, int64_t rows, int64_t cols) {
  vector_loops().store_rows_bf16(f, ldf, t, ldt, rows, cols);
}
inline void rope_rows(const RopeRows& rr, const float* x, float* y, const float* c, const float* s, int64_t start,
                      float direction, int64_t b, int64_t e) {
  vector_loops().rope_rows_f32(rr, x, y, c, s, start, direction, b, e);
}
inline void rope_rows(const RopeRows& rr, const bf16* x, bf16* y, const float* c, const float* s, int64_t start,
                      float direction, int64_t b, int64_t e) {
  vector_loops().rope_rows_bf16(rr, x, y, c, s, start, direction, b, e);
}
}  // namespace vec

}  // namespace dsforge::kernels
