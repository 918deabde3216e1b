// The platform under the fused kernels, in one place: the BLAS products (sgemm on the system libblas.so.3,
// oneDNN's bf16 GEMM looked up at run time), OpenMP's per-task thread count, and the choice of the
// vector loops' instruction set. Each premise is checked once and said (fast_paths(), `dsforge doctor`).
//
//   Vector ISA: the loops of vec.h come compiled three times (generic x86-64, AVX2+FMA,
//   AVX-512 F/BW/VL/DQ+FMA); the best one this CPU runs is chosen at the first kernel call, or the one
//   DSFORGE_KERNEL_ISA=generic|avx2|avx512 names (read once; an ISA the CPU lacks is refused with a log
//   line and the best available one used).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsforge/kernels/vec.h"

namespace dsforge::kernels {

// Row-major C[M, N] = op(A) op(B) + beta C: sgemm where the build found the system BLAS
// (DSFORGE_HAVE_BLAS), at::mm_out on views of the same memory otherwise.
void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc);
// The same with bfloat16 operands (raw bits) and float32 accumulation, through oneDNN's
// dnnl_gemm_bf16bf16f32; only where bf16_gemm_available() (fused.h).
void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
             const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// C[M, N] = A[M, K] B[N, K]^T + beta C with the weight B in bfloat16 (raw bits), any M, single-threaded:
// B widened to float32 as it is read, the few-row kernel's float32 products and summation order
// (few_rows.inc), so a row's results do not depend on M. What a decode step with bfloat16 weights runs.
void gemm_nt_bf16w(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B, int64_t ldb,
                   float beta, float* C, int64_t ldc);

// Int8 products (int8_rows.inc), exact in int32: C[M, N] = A[M, K] (uint8) B[N, K]^T (int8), in the
// vector loops' ISA, with vpdpbusd where the loops are AVX-512 and the CPU has AVX512-VNNI. int8_kernel()
// names the form in use: "avx512-vnni", "avx512", "avx2" or "generic".
void gemm_u8s8(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb, int32_t* C,
               int64_t ldc);
std::string int8_kernel();
// sums[n] = sum_k w[n, k] of a row-major int8 weight [N, K] (what linear_w8a8 needs beside it).
void int8_row_sums(const int8_t* w, int64_t N, int64_t K, int32_t* sums);
// A w8a8 linear layer over a few rows (single-threaded): each row of x [M, K] quantised to int8 with its
// own scale sx = max|x| / 127, W [N, K] int8 with per-row scales, products in int32:
//   y[m, n] = sx[m] w_scale[n] (sum_k (qx[m, k] + 128) W[n, k] - 128 w_sum[n]) = sx[m] w_scale[n] sum_k qx W,
// added to y instead when `accumulate`. `static_scale` > 0: every row uses that activation scale
// (calibrated), values beyond +-127 steps clipped.
void linear_w8a8(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const int8_t* w, const float* w_scale,
                 const int32_t* w_sum, float* y, int64_t ldy, bool accumulate = false, float static_scale = 0.0f);

// Called first in every parallel task that runs GEMMs: the task's BLAS calls then run single-threaded.
void blas_single_threaded_in_this_task();

// f(task, worker) for tasks [0, n), taken in order by the calling thread and up to `workers` - 1 helper
// threads kept for it (they spin briefly between calls, then sleep), each task's BLAS and ATen
// operations single-threaded; `worker` < workers indexes the caller's per-thread scratch. The first
// exception a task throws is rethrown here (the tasks not yet begun are skipped). One worker, or a call
// from inside a task or an OpenMP parallel region: a plain loop on this thread.
void run_tasks(int64_t n, int64_t workers, const std::function<void(int64_t task, int64_t worker)>& f);

// The vector loops in use (the first call chooses them).
const VectorLoops& vector_loops();
// The ISAs this CPU runs, best first ("avx512", "avx2", "generic"; "generic" always).
std::vector<std::string> supported_vector_isas();
// Switches the loops to one of supported_vector_isas() (tests, A/B runs); throws std::invalid_argument
// for another. Not for use while kernels run on other threads.
void set_vector_isa(const std::string& isa);

}  // namespace dsforge::kernels
