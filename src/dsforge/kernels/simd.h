// Inline helpers of the vector loops (vec_loops.inc): exp without library calls, sigmoid, and loads and
// stores of float32 or bfloat16 storage computing in float32. ISA-free: no ATen, no standard-library
// templates. Everything here has internal linkage (an unnamed namespace), so each per-ISA loop file
// gets its own copy compiled for its instruction set and the linker can never hand one ISA's copy to
// another file (inline functions with external linkage are merged across files: the SIGILL hazard).
#pragma once
#include <cstdint>
#include <cstring>

namespace dsforge::kernels::simd {
namespace {

// The helpers must inline into the loops that call them or those loops stay scalar (made generic over
// the element type, GCC left exp_approx out of line: GELU went from 1.3 to 14 ms), so they are forced.
#define DSFORGE_ALWAYS_INLINE inline __attribute__((always_inline))

// exp(x) = 2^n e^r with n = round(x / ln 2), |r| <= ln2 / 2, and Cephes' degree-5 polynomial for
// e^r (relative error below 2e-7 over the float range). Written without library calls so the
// loops vectorise; inputs below -87 give ~1e-38 instead of a denormal or zero, which only
// matters for probabilities already far below float resolution of their row's sum.
DSFORGE_ALWAYS_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float fn = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = x - fn * 0.693359375f - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// exp(x) in float64 for the sampler: the same reduction (ln 2 in two parts, fdlibm's, so n ln2_hi is exact),
// then e^r by its Taylor series to r^13 (truncation below 5e-18 relative for |r| <= ln2 / 2), so within a few
// ulp of the library's exp. Arguments below -708 give 0 (the library gives a denormal down to -745): a
// sampler's weights relative to its largest, 1e-308 and less, do not change a draw.
DSFORGE_ALWAYS_INLINE double exp_f64(double x) {
  const double xc = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to the integer in the low bits
  const double t = xc * 1.4426950408889634 + shifter;
  const double fn = t - shifter;
  int64_t n;
  std::memcpy(&n, &t, sizeof n);
  n -= 0x4338000000000000LL;  // the bits of the shifter
  const double r = (xc - fn * 6.93147180369123816490e-01) - fn * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t bits = (n + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const double y = p * scale;
  return x != x ? x : (x < -708.0 ? 0.0 : y);
}

DSFORGE_ALWAYS_INLINE float sigmoid(float t) { return 1.0f / (1.0f + exp_approx(-t)); }

// Element storage: float32, or bfloat16 as raw uint16_t bits (the upper half of a float32: widening is a
// shift, narrowing rounds to nearest even, NaN stays NaN), so the bf16 loops vectorise like the float ones.
DSFORGE_ALWAYS_INLINE float load(const float* p, int64_t i) { return p[i]; }
DSFORGE_ALWAYS_INLINE float load(const uint16_t* p, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
DSFORGE_ALWAYS_INLINE void store(float* p, int64_t i, float v) { p[i] = v; }
DSFORGE_ALWAYS_INLINE void store(uint16_t* p, int64_t i, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  p[i] = static_cast<uint16_t>(v != v ? 0x7fc0u : rounded);
}

DSFORGE_ALWAYS_INLINE int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

}  // namespace
}  // namespace dsforge::kernels::simd
