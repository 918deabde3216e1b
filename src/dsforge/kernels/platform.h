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

// Called first in every parallel task that runs GEMMs: the task's BLAS calls then run single-threaded.
void blas_single_threaded_in_this_task();

// The vector loops in use (the first call chooses them).
const VectorLoops& vector_loops();
// The ISAs this CPU runs, best first ("avx512", "avx2", "generic"; "generic" always).
std::vector<std::string> supported_vector_isas();
// Switches the loops to one of supported_vector_isas() (tests, A/B runs); throws std::invalid_argument
// for another. Not for use while kernels run on other threads.
void set_vector_isa(const std::string& isa);

}  // namespace dsforge::kernels
