// `dsforge doctor`: what this build and machine give dsforge, and which fast paths are on.
#pragma once
#include <string>

namespace dsforge::pipeline {

// libtorch version and build (CUDA, NCCL, oneDNN, OpenMP), the BLAS library in use and its measured
// float32 GFLOP/s, CPUs and threads, the CPU's vector extensions, and each fast path (fused kernels,
// bf16 GEMM, caching allocator) with the reason it is off. A table, or JSON.
std::string doctor_report(bool as_json);

}  // namespace dsforge::pipeline
