// Fused CPU kernels where the profile of a training step says time goes (bench_train_throughput
// --profile): each replaces a chain of ATen ops that would read and write the same large tensor
// several times with one or two passes, as a custom autograd function with a hand-written backward.
//
//   cross_entropy  logits [N, V] float32 -> mean loss; the gradient (softmax - target) / N is
//                  produced in the forward pass, so backward is free and no log-softmax is kept.
//   gelu_tanh      x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), the GPT-2 "gelu_new", and its derivative.
//   silu_mul       silu(gate) * up, the SwiGLU product, and both derivatives.
//   rms_norm       x * rsqrt(mean(x^2) + eps) * w over the last dimension, saving only the per-row scale
//                  (x float32 or bfloat16, w float32).
//
// cross_entropy, gelu_tanh and silu_mul also run on bfloat16 tensors (what bf16 autocast hands them),
// computing in float32 and rounding once on the way out, several times faster than ATen's bf16 kernels.
// Every function falls back to the equivalent ATen composition where the fast path does not apply
// (not float32, not CPU, not contiguous), so results never depend on where a tensor lives.
// Tests compare each against that composition and against finite differences.
//
// Implemented by family (elementwise.cpp, attention.cpp, experts.cpp, optimizer.cpp) around the vector
// loops of vec.h, compiled per instruction set and chosen at run time; the BLAS, oneDNN and OpenMP
// plumbing, the switches and fast_paths() in platform.cpp; libtorch-version differences in compat.h.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace dsforge::kernels {

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, double label_smoothing = 0.0,
                         int64_t ignore_index = -100);
at::Tensor gelu_tanh(const at::Tensor& x);
at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// softmax(scale * scores + causal mask) over the last dimension of scores [..., S, T]: query s sees
// keys t <= s + (T - S). Scaling, masking and softmax in one pass (masked keys cost no exp), and one
// pass back; replaces scores * scale, + mask, softmax and their three backward passes.
at::Tensor causal_softmax(const at::Tensor& scores, double scale);
// Causal attention softmax(scale q k^T + mask) v for q [B, H, S, D], k [B, H, T, D], v [B, H, T, Dv]
// -> [B, H, S, Dv]. One (batch, head) slice per task: its two products, the masked softmax between
// them and, going back, its four products run on one core with the scores in cache, instead of
// each batched product being split across cores separately. bfloat16 inputs (bf16 autocast) use
// bfloat16 products with float32 accumulation where oneDNN's bf16 GEMM is at hand
// (bf16_gemm_available()), float32 otherwise.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale);
bool bf16_gemm_available();

// Rotary embedding of interleaved pairs of the last dim of x [B, S, ..., d] at positions start + s
// (s along dim 1), with cos/sin tables [P, d/2]: y_2i = x_2i c - x_2i+1 s, y_2i+1 = x_2i s + x_2i+1 c.
// Applies (rope_applies) to float32 or bfloat16 CPU x with a contiguous last dim (float32 tables), read in
// place from strided views; bfloat16 is rotated in float32 and rounded once.
bool rope_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t start);
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t start);

// Routed SwiGLU experts over tokens grouped by expert: the first counts[0] rows of x go through
// expert 0, the next counts[1] through expert 1, ...; weights = {gate_0, up_0, down_0, gate_1, ...}
// ([I, d], [I, d], [d, I], bias-free). Returns the [rows, d] outputs in the same order. Applies to
// float32 CPU tensors outside autocast, and under bf16 CPU autocast (float32 or bfloat16 tensors; the
// products then run in bfloat16 with float32 accumulation and the output is bfloat16, as autocast's
// linears give) where bf16_gemm_available() (grouped_swiglu_applies); callers run the experts one by
// one otherwise. Experts with no rows get no gradient, as when they are not called.
bool grouped_swiglu_applies(const at::Tensor& x, at::TensorList weights);
at::Tensor grouped_swiglu(const at::Tensor& x, const std::vector<int64_t>& counts, at::TensorList weights);

// Optimizer pieces: the squared L2 norm of a tensor (double accumulation, no copy), and one AdamW
// update of a float32 parameter in a single pass: g = grad * grad_scale; m, v updated; decoupled decay.
double sum_of_squares(const at::Tensor& t);
struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, grad_scale;
};
void adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                  const AdamWStep& s);

// Whether autocast is on for device type t, and its dtype (compat.h, where the queries' libtorch versions differ).
bool autocast_enabled(c10::DeviceType t);
c10::ScalarType autocast_dtype_of(c10::DeviceType t);

// Whether the fused paths are enabled (DSFORGE_FUSED=0 in the environment turns them off, for A/B runs).
bool fused_enabled();

// Each fast path of the kernels, whether it is active here, and why not when it is not
// (`dsforge doctor` prints them; each path also logs once when its premise fails).
struct FastPath {
  std::string name;
  bool active = false;
  std::string detail;
};
std::vector<FastPath> fast_paths();

}  // namespace dsforge::kernels
