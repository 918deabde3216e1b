// The vector loops compiled for avx2 (CMakeLists.txt sets this file's instruction-set flags).
#define DSFORGE_VEC_ISA avx2
#include "dsforge/kernels/vec_loops.inc"
