// The fused kernels' hot loops as a table of functions on raw pointers and sizes, one table per
// instruction set. The loops (vec_loops.inc) are compiled once per ISA (vec_generic.cpp, vec_avx2.cpp,
// vec_avx512.cpp, each with its own -m flags and namespace), and platform.cpp picks one table at start by
// __builtin_cpu_supports (or DSFORGE_KERNEL_ISA). Files that include ATen are compiled for baseline
// x86-64 and call the loops through the table (internal.h), so one binary runs on every x86-64 CPU:
// an inline ATen function compiled for AVX-512 can no longer be chosen by the linker for the whole
// program. ISA-free: this header and the loop files include no ATen.
//
// Element storage: float32, or bfloat16 as raw uint16_t bits; arithmetic in float32. b, e: the element
// (or row) range [b, e) of one parallel chunk.
#pragma once
#include <cstdint>

namespace dsforge::kernels {

// The rows of RoPE's x [B, S, ..., d]: the sizes and element strides of the dims before the last (at most
// kMaxDims of them), the last dim contiguous. Position s of a row is its index along dim 1.
struct RopeRows {
  static constexpr int kMaxDims = 8;
  int64_t rows = 0, d = 0;
  int n_dims = 0;
  int64_t sizes[kMaxDims] = {}, strides[kMaxDims] = {};
};

// One AdamW update in float32: g = grad * grad_scale; m, v updated; p = p * decay - step * m / (sqrt(v * inv_bc2) + eps).
struct AdamWScalars {
  float beta1, beta2, grad_scale, decay, step, inv_bc2, eps;
};

struct VectorLoops {
  const char* isa;  // "generic", "avx2", "avx512"

  // Cross-entropy of one row of logits x [V] (label smoothing eps, gradient scale inv_n): returns the
  // row's loss and, where g is not null, writes softmax - (1 - eps) onehot(target) - eps / V, times inv_n.
  double (*cross_entropy_row_f32)(const float* x, float* g, float* e_buf, int64_t V, int64_t target, float eps, float inv_n);
  double (*cross_entropy_row_bf16)(const uint16_t* x, uint16_t* g, float* e_buf, int64_t V, int64_t target, float eps,
                                   float inv_n);
  // tanh-GELU y = x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) and dx = dy gelu'(x).
  void (*gelu_forward_f32)(const float* x, float* y, int64_t b, int64_t e);
  void (*gelu_forward_bf16)(const uint16_t* x, uint16_t* y, int64_t b, int64_t e);
  void (*gelu_backward_f32)(const float* x, const float* dy, float* dx, int64_t b, int64_t e);
  void (*gelu_backward_bf16)(const uint16_t* x, const uint16_t* dy, uint16_t* dx, int64_t b, int64_t e);
  // SwiGLU product y = silu(gate) * up and its two derivatives; the f32_to_bf16 forms (grouped experts
  // under bf16 autocast) read float32 and write bfloat16.
  void (*silu_mul_forward_f32)(const float* gate, const float* up, float* y, int64_t b, int64_t e);
  void (*silu_mul_forward_bf16)(const uint16_t* gate, const uint16_t* up, uint16_t* y, int64_t b, int64_t e);
  void (*silu_mul_forward_f32_to_bf16)(const float* gate, const float* up, uint16_t* y, int64_t b, int64_t e);
  void (*silu_mul_backward_f32)(const float* gate, const float* up, const float* dy, float* dg, float* du, int64_t b,
                                int64_t e);
  void (*silu_mul_backward_bf16)(const uint16_t* gate, const uint16_t* up, const uint16_t* dy, uint16_t* dg, uint16_t* du,
                                 int64_t b, int64_t e);
  void (*silu_mul_backward_f32_to_bf16)(const float* gate, const float* up, const float* dy, uint16_t* dg, uint16_t* du,
                                        int64_t b, int64_t e);
  // RMSNorm over rows [b, e) of x [rows, d]: y = x r w, r = rsqrt(mean(x^2) + eps) saved per row; backward
  // writes dx and adds this chunk's dy x r into pw [d].
  void (*rms_norm_rows_f32)(const float* x, const float* w, float* y, float* r, int64_t d, float eps, int64_t b, int64_t e);
  void (*rms_norm_rows_bf16)(const uint16_t* x, const float* w, uint16_t* y, float* r, int64_t d, float eps, int64_t b,
                             int64_t e);
  void (*rms_norm_backward_rows_f32)(const float* x, const float* w, const float* r, const float* dy, float* dx, float* pw,
                                     int64_t d, int64_t b, int64_t e);
  void (*rms_norm_backward_rows_bf16)(const uint16_t* x, const float* w, const float* r, const uint16_t* dy, uint16_t* dx,
                                      float* pw, int64_t d, int64_t b, int64_t e);
  // One causal softmax row: y[:n] = softmax(sc * x[:n]), y[n:T] = 0; x is overwritten with the
  // unnormalised exponentials and y may alias it (float32). Backward: dx[:n] = sc y (dy - sum(y dy)),
  // dx[n:T] = 0; dx may alias dy (float32).
  void (*softmax_row_f32)(float* x, float* y, int64_t n, int64_t T, float sc);
  void (*softmax_row_bf16)(float* x, uint16_t* y, int64_t n, int64_t T, float sc);
  void (*softmax_row_backward_f32)(const float* y, const float* dy, float* dx, int64_t n, int64_t T, float sc);
  void (*softmax_row_backward_bf16)(const uint16_t* y, const float* dy, uint16_t* dx, int64_t n, int64_t T, float sc);
  // rows x cols float32 results (leading dimension ldf) rounded into bfloat16 storage (leading dimension ldt).
  void (*store_rows_bf16)(const float* f, int64_t ldf, uint16_t* t, int64_t ldt, int64_t rows, int64_t cols);
  // Rows [b, e) of RoPE: y (contiguous [rows, d]) = x rotated by direction * the angle of position start + s.
  void (*rope_rows_f32)(const RopeRows& rr, const float* x, float* y, const float* cos, const float* sin, int64_t start,
                        float direction, int64_t b, int64_t e);
  void (*rope_rows_bf16)(const RopeRows& rr, const uint16_t* x, uint16_t* y, const float* cos, const float* sin,
                         int64_t start, float direction, int64_t b, int64_t e);
  // Sampling: x[i] = exp(x[i] - shift) over [0, n) in float64 (within a few ulp of std::exp; below -708, 0),
  // their sum returned (summed in vector lanes: the same bits for the same x on one instruction set).
  double (*exp_shifted_sum_f64)(double* x, int64_t n, double shift);
  // Optimizer: sum of p[i]^2 over [0, n) in float32; AdamW over elements [b, e).
  float (*sum_of_squares)(const float* p, int64_t n);
  void (*adamw)(float* p, const float* g, float* m, float* v, const AdamWScalars& s, int64_t b, int64_t e);
  // The few-row products of a batched decode step (few_rows.inc), row-major with leading dimensions,
  // single-threaded: C[M, N] = A[M, K] B[N, K]^T + beta C (nt) and A[M, K] B[K, N] + beta C (nn).
  // kernels::gemm_rm takes them for 2 to few_rows_max rows, where they measured faster than OpenBLAS.
  void (*gemm_nt_f32)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                      float beta, float* C, int64_t ldc);
  void (*gemm_nn_f32)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                      float beta, float* C, int64_t ldc);
  // gemm_nt_f32 with B in bfloat16 (raw bits): weights kept at half the bytes, widened as they are read,
  // float32 products in gemm_nt_f32's order (any number of rows; generic: one dot product per sum).
  void (*gemm_nt_f32_bf16w)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B,
                            int64_t ldb, float beta, float* C, int64_t ldc);
  int64_t few_rows_max;
  // Int8 products of quantised decode (int8_rows.inc): C[M, N] int32 = A[M, K] (uint8) B[N, K]^T (int8),
  // exact. gemm_u8s8_nt_vnni is the AVX-512 VNNI form (null in the tables that have none); only call it
  // where the CPU has avx512vnni (kernels::gemm_u8s8 picks).
  void (*gemm_u8s8_nt)(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb,
                       int32_t* C, int64_t ldc);
  void (*gemm_u8s8_nt_vnni)(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb,
                            int32_t* C, int64_t ldc);
  // Rows of x [M, K] quantised symmetrically per row and shifted into bytes: scale[m] = max|x[m]| / 127,
  // q[m, k] = round(x[m, k] / scale[m]) + 128 (an all-zero row: scale 0, q 128).
  void (*quantize_rows_u8)(const float* x, int64_t ldx, int64_t M, int64_t K, uint8_t* q, int64_t ldq, float* scale);
};

// The table of each ISA (vec_<isa>.cpp); only call one whose ISA the CPU has (platform.h picks).
const VectorLoops& vector_loops_generic();
const VectorLoops& vector_loops_avx2();
const VectorLoops& vector_loops_avx512();

}  // namespace dsforge::kernels
