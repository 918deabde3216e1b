// The vector loops compiled for generic (CMakeLists.txt sets this file's instruction-set flags).
#define DSFORGE_VEC_ISA generic
#include "dsforge/kernels/vec_loops.inc"
