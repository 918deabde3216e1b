// The vector loops compiled for avx512 (CMakeLists.txt sets this file's instruction-set flags).
#define DSFORGE_VEC_ISA avx512
#include "dsforge/kernels/vec_loops.inc"
