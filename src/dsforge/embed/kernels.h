// Inner loops of embedding training on float rows: written with GCC vector extensions (8 lanes, two
// accumulators) so they vectorise without -ffast-math, and always inlined so that the callers'
// target_clones ("arch=x86-64-v3" / "default") compile them for each instruction set.
#pragma once
#include <cstring>

// The 32-byte vector helpers are always inlined, so their by-value ABI (what -Wpsabi warns about) never
// shows at a call boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

#include "dsforge/embed/word2vec.h"

namespace dsforge::embed::kernels {

typedef float v8sf __attribute__((vector_size(32)));

__attribute__((always_inline)) inline v8sf load8(const float* p) {
  v8sf r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
__attribute__((always_inline)) inline void store8(float* p, v8sf v) { std::memcpy(p, &v, sizeof v); }

__attribute__((always_inline)) inline float dot(const float* a, const float* b, int n) {
  v8sf acc0 = {0, 0, 0, 0, 0, 0, 0, 0}, acc1 = acc0;
  int k = 0;
  for (; k + 16 <= n; k += 16) {
    acc0 += load8(a + k) * load8(b + k);
    acc1 += load8(a + k + 8) * load8(b + k + 8);
  }
  for (; k + 8 <= n; k += 8) acc0 += load8(a + k) * load8(b + k);
  const v8sf s = acc0 + acc1;
  float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; k < n; ++k) r += a[k] * b[k];
  return r;
}

// y += g * x
__attribute__((always_inline)) inline void axpy(float g, const float* x, float* y, int n) {
  const v8sf gv = {g, g, g, g, g, g, g, g};
  int k = 0;
  for (; k + 8 <= n; k += 8) store8(y + k, load8(y + k) + gv * load8(x + k));
  for (; k < n; ++k) y[k] += g * x[k];
}

// e += g * out; out += g * in, reading `out` once
__attribute__((always_inline)) inline void axpy2(float g, const float* in, float* out, float* e, int n) {
  const v8sf gv = {g, g, g, g, g, g, g, g};
  int k = 0;
  for (; k + 8 <= n; k += 8) {
    const v8sf o = load8(out + k);
    store8(e + k, load8(e + k) + gv * o);
    store8(out + k, o + gv * load8(in + k));
  }
  for (; k < n; ++k) {
    const float o = out[k];
    e[k] += g * o;
    out[k] = o + g * in[k];
  }
}

__attribute__((always_inline)) inline void scale(float g, float* y, int n) {
  for (int k = 0; k < n; ++k) y[k] *= g;
}

// word2vec's logistic: saturated outside [-6, 6], tabulated inside.
__attribute__((always_inline)) inline float sigmoid(const SigmoidTable& t, float f) {
  if (f >= SigmoidTable::kMaxExp) return 1.0f;
  if (f <= -SigmoidTable::kMaxExp) return 0.0f;
  const int i = static_cast<int>((f + SigmoidTable::kMaxExp) * (SigmoidTable::kSize / SigmoidTable::kMaxExp / 2));
  return t.table[i < SigmoidTable::kSize ? i : SigmoidTable::kSize - 1];
}

}  // namespace dsforge::embed::kernels
