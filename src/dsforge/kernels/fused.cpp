#include "dsforge/kernels/fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include "dsforge/core/log.h"

#include <dlfcn.h>
#ifdef DSFORGE_HAVE_OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

namespace dsforge::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The helpers below must inline into the loops that call them or those loops stay scalar; GCC's
// inliner gives up on them inside the large autograd functions, so they are forced.
#define DSFORGE_ALWAYS_INLINE inline __attribute__((always_inline))

// exp(x) = 2^n e^r with n = round(x / ln 2), |r| <= ln2 / 2, and Cephes' degree-5 polynomial for
// e^r (relative error below 2e-7 over the float range). Written without library calls so the
// loops below vectorise; inputs below -87 give ~1e-38 instead of a denormal or zero, which only
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

DSFORGE_ALWAYS_INLINE float sigmoid(float t) { return 1.0f / (1.0f + exp_approx(-t)); }

// Whether a kernel's fast path applies: fused kernels on, every tensor defined, CPU, contiguous and
// float32 (or, for the kernels that take it, all bfloat16).
bool fast_path(std::initializer_list<const at::Tensor*> ts, bool allow_bf16 = false) {
  if (!fused_enabled()) return false;
  const at::Tensor* first = *ts.begin();
  if (!first->defined()) return false;
  const auto dt = first->scalar_type();
  if (dt != at::kFloat && !(allow_bf16 && dt == at::kBFloat16)) return false;
  for (const at::Tensor* t : ts)
    if (!t->defined() || t->scalar_type() != dt || !t->device().is_cpu() || !t->is_contiguous()) return false;
  return true;
}

constexpr int64_t kGrain = 16384;  // elements per parallel chunk

// ------------------------------------------------------------------ element storage
// The element-wise kernels read and write float32 or bfloat16 and compute in float32. bfloat16 is
// the upper half of a float32: widening is a shift, narrowing rounds to nearest even (NaN stays NaN).
// Written on raw uint16_t so the loops vectorise like the float ones.
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

template <typename T>
T* ptr(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// Runs f.template operator()<T>() with T = float or uint16_t (bfloat16 bits) for t's dtype.
template <typename F>
void dispatch_storage(const at::Tensor& t, F&& f) {
  if (t.scalar_type() == at::kBFloat16) f(uint16_t{});
  else f(float{});
}

// ------------------------------------------------------------------ cross-entropy
// Per row: m = max x, s = sum exp(x - m), lse = m + log s; loss = (1 - e)(lse - x_t) + e (lse - mean x).
// Gradient / N: softmax - (1 - e) onehot(t) - e / V. Logits may be bfloat16 (the LM head under bf16
// autocast): read as float32, the gradient rounded to bfloat16 once, no float32 copy of the logits.
template <typename T>
double cross_entropy_row(const T* x, T* g, float* e_buf, int64_t V, int64_t target, float eps, float inv_n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < V; ++j) m = std::max(m, load(x, j));
  float s = 0, sx = 0;
#pragma omp simd reduction(+ : s, sx)
  for (int64_t j = 0; j < V; ++j) {
    const float xj = load(x, j), e = exp_approx(xj - m);
    e_buf[j] = e;
    s += e;
    sx += xj;
  }
  const double lse = static_cast<double>(m) + std::log(static_cast<double>(s));
  const double loss = (1.0 - eps) * (lse - load(x, target)) + eps * (lse - static_cast<double>(sx) / static_cast<double>(V));
  if (g) {
    const float scale = inv_n / s, shift = eps * inv_n / static_cast<float>(V), hit = (1.0f - eps) * inv_n;
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) store(g, j, e_buf[j] * scale - shift - (j == target ? hit : 0.0f));
  }
  return loss;
}

struct CrossEntropyFn : torch::autograd::Function<CrossEntropyFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets, double eps,
                            int64_t ignore_index) {
    const int64_t N = logits.size(0), V = logits.size(1);
    const bool need_grad = ctx != nullptr;
    at::Tensor grad = need_grad ? at::empty_like(logits) : at::Tensor();
    at::Tensor tg = targets.to(at::kLong).contiguous();
    const int64_t* t = tg.data_ptr<int64_t>();
    int64_t n_valid = 0;
    for (int64_t i = 0; i < N; ++i) {
      if (t[i] == ignore_index) continue;
      if (t[i] < 0 || t[i] >= V) throw std::out_of_range("cross_entropy: target " + std::to_string(t[i]) + " outside [0, " + std::to_string(V) + ")");
      ++n_valid;
    }
    const float inv_n = n_valid > 0 ? 1.0f / static_cast<float>(n_valid) : 0.0f;
    std::vector<double> row_loss(static_cast<size_t>(N), 0.0);
    dispatch_storage(logits, [&](auto tag) {
      using T = decltype(tag);
      const T* x0 = ptr<T>(logits);
      T* g0 = need_grad ? ptr<T>(grad) : nullptr;
      at::parallel_for(0, N, std::max<int64_t>(1, kGrain / V), [&](int64_t begin, int64_t end) {
        std::vector<float> e_buf(static_cast<size_t>(V));
        for (int64_t i = begin; i < end; ++i) {
          T* g = need_grad ? g0 + i * V : nullptr;
          if (t[i] == ignore_index) {
            if (g) std::fill(g, g + V, T{});
            continue;
          }
          row_loss[static_cast<size_t>(i)] =
              cross_entropy_row(x0 + i * V, g, e_buf.data(), V, t[i], static_cast<float>(eps), inv_n);
        }
      });
    });
    double total = 0;
    for (double l : row_loss) total += l;
    if (need_grad) ctx->save_for_backward({grad});
    return at::scalar_tensor(n_valid > 0 ? total / static_cast<double>(n_valid) : 0.0, logits.options().dtype(at::kFloat));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    at::Tensor g = ctx->get_saved_variables()[0];
    const float go = grad_out[0].item<float>();
    if (go != 1.0f) g.mul_(go);  // the buffer is ours and used once: scale in place
    return {g, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ------------------------------------------------------------------ GELU (tanh form)
constexpr float kGeluK = 1.5957691216057308f;  // 2 sqrt(2 / pi): 0.5 (1 + tanh(z)) = sigmoid(2 z)
constexpr float kGeluC = 0.044715f;

// The loops are plain function templates: GCC does not vectorise them inside generic lambdas.
template <typename T>
void gelu_forward(const T* x, T* y, int64_t b, int64_t e) {
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float v = load(x, i);
    store(y, i, v * sigmoid(kGeluK * (v + kGeluC * v * v * v)));
  }
}

template <typename T>
void gelu_backward(const T* x, const T* dy, T* dx, int64_t b, int64_t e) {
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float v = load(x, i);
    const float s = sigmoid(kGeluK * (v + kGeluC * v * v * v));
    store(dx, i, load(dy, i) * (s + v * s * (1.0f - s) * kGeluK * (1.0f + 3.0f * kGeluC * v * v)));
  }
}

struct GeluFn : torch::autograd::Function<GeluFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x) {
    at::Tensor y = at::empty_like(x);
    dispatch_storage(x, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) { gelu_forward(ptr<T>(x), ptr<T>(y), b, e); });
    });
    ctx->save_for_backward({x});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    at::Tensor x = ctx->get_saved_variables()[0];
    at::Tensor dy = grad_out[0].to(x.scalar_type()).contiguous();
    at::Tensor dx = at::empty_like(x);
    dispatch_storage(x, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, x.numel(), kGrain,
                       [&](int64_t b, int64_t e) { gelu_backward(ptr<T>(x), ptr<T>(dy), ptr<T>(dx), b, e); });
    });
    return {dx};
  }
};

// ------------------------------------------------------------------ SwiGLU product
template <typename T, typename Y>
void silu_mul_forward(const T* gate, const T* up, Y* y, int64_t b, int64_t e) {
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float g = load(gate, i);
    store(y, i, g * sigmoid(g) * load(up, i));
  }
}

template <typename T, typename DY, typename D>
void silu_mul_backward(const T* gate, const T* up, const DY* dy, D* dg, D* du, int64_t b, int64_t e) {
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float g = load(gate, i), u = load(up, i), d = load(dy, i), s = sigmoid(g);
    store(dg, i, d * u * s * (1.0f + g * (1.0f - s)));
    store(du, i, d * g * s);
  }
}

struct SiluMulFn : torch::autograd::Function<SiluMulFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    at::Tensor y = at::empty_like(gate);
    dispatch_storage(gate, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, gate.numel(), kGrain,
                       [&](int64_t b, int64_t e) { silu_mul_forward(ptr<T>(gate), ptr<T>(up), ptr<T>(y), b, e); });
    });
    ctx->save_for_backward({gate, up});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    at::Tensor gate = saved[0], up = saved[1], dy = grad_out[0].to(gate.scalar_type()).contiguous();
    at::Tensor dg = at::empty_like(gate), du = at::empty_like(up);
    dispatch_storage(gate, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, gate.numel(), kGrain, [&](int64_t b, int64_t e) {
        silu_mul_backward(ptr<T>(gate), ptr<T>(up), ptr<T>(dy), ptr<T>(dg), ptr<T>(du), b, e);
      });
    });
    return {dg, du};
  }
};

// ------------------------------------------------------------------ RMSNorm
// y = x r w with r = 1 / sqrt(mean(x^2) + eps) per row. Backward:
//   dx = r (dy w) - x r^3 / d * sum(dy w x),  dw = sum over rows of dy x r.
// x, y, dy and dx are float32 or bfloat16 (under autocast the norms inside attention get bf16
// projections); w, r and dw are float32, the arithmetic float32.
template <typename T>
void rms_norm_rows(const T* xp, const float* wp, T* yp, float* rp, int64_t d, float eps, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) {
    const T* xi = xp + i * d;
    float ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < d; ++j) ss += load(xi, j) * load(xi, j);
    const float ri = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
    rp[i] = ri;
    T* yi = yp + i * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) store(yi, j, load(xi, j) * ri * wp[j]);
  }
}

template <typename T>
void rms_norm_backward_rows(const T* xp, const float* wp, const float* rp, const T* dyp, T* dxp, float* pw, int64_t d,
                            int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) {
    const T *xi = xp + i * d, *dyi = dyp + i * d;
    const float ri = rp[i];
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; ++j) dot += load(dyi, j) * wp[j] * load(xi, j);
    const float c = ri * ri * ri * dot / static_cast<float>(d);
    T* dxi = dxp + i * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      const float xj = load(xi, j), dyj = load(dyi, j);
      store(dxi, j, ri * dyj * wp[j] - xj * c);
      pw[j] += dyj * xj * ri;
    }
  }
}

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, double eps) {
    const int64_t d = x.size(-1), rows = x.numel() / d;
    at::Tensor y = at::empty_like(x), r = at::empty({rows}, x.options().dtype(at::kFloat));
    dispatch_storage(x, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / d), [&](int64_t b, int64_t e) {
        rms_norm_rows(ptr<T>(x), ptr<float>(w), ptr<T>(y), ptr<float>(r), d, static_cast<float>(eps), b, e);
      });
    });
    ctx->save_for_backward({x, w, r});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    at::Tensor x = saved[0], w = saved[1], r = saved[2], dy = grad_out[0].to(x.scalar_type()).contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    at::Tensor dx = at::empty_like(x);
    // dw: one partial sum per fixed block of rows (deterministic for any thread count), summed after.
    const int64_t block = std::max<int64_t>(1, kGrain / d), n_blocks = (rows + block - 1) / block;
    at::Tensor partial = at::zeros({n_blocks, d}, w.options());
    dispatch_storage(x, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk)
          rms_norm_backward_rows(ptr<T>(x), ptr<float>(w), ptr<float>(r), ptr<T>(dy), ptr<T>(dx), ptr<float>(partial) + blk * d,
                                 d, blk * block, std::min(rows, (blk + 1) * block));
      });
    });
    return {dx, partial.sum(0), at::Tensor()};
  }
};

// ------------------------------------------------------------------ scaled causal softmax
// One row: y[:n] = softmax(scale * x[:n]), y[n:] = 0 (the masked keys). x is overwritten with the
// unnormalised exponentials; y may alias it (float32) or be bfloat16 storage.
template <typename Y>
DSFORGE_ALWAYS_INLINE void softmax_row(float* x, Y* y, int64_t n, int64_t T, float sc) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  m *= sc;
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) {
    x[j] = exp_approx(x[j] * sc - m);
    s += x[j];
  }
  const float inv = 1.0f / s;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) store(y, j, x[j] * inv);
  std::fill(y + n, y + T, Y{});
}

// Its backward: dx = scale * y * (dy - sum(y * dy)); dx may alias dy (float32) or be bfloat16 storage.
template <typename Y, typename DX>
DSFORGE_ALWAYS_INLINE void softmax_row_backward(const Y* y, const float* dy, DX* dx, int64_t n, int64_t T, float sc) {
  float dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < n; ++j) dot += load(y, j) * dy[j];
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) store(dx, j, sc * load(y, j) * (dy[j] - dot));
  std::fill(dx + n, dx + T, DX{});
}

struct CausalSoftmaxFn : torch::autograd::Function<CausalSoftmaxFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double scale) {
    const int64_t T = x.size(-1), S = x.size(-2), rows = x.numel() / T, off = T - S;
    at::Tensor y = at::empty_like(x);
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const float sc = static_cast<float>(scale);
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / T), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t n = std::min(T, i % S + off + 1);  // visible keys of this query
        std::copy(xp + i * T, xp + i * T + n, yp + i * T);  // softmax_row works in place
        softmax_row(yp + i * T, yp + i * T, n, T, sc);
      }
    });
    ctx->save_for_backward({y});
    ctx->saved_data["scale"] = scale;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    at::Tensor y = ctx->get_saved_variables()[0], dy = grad_out[0].contiguous();
    const float sc = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const int64_t T = y.size(-1), S = y.size(-2), rows = y.numel() / T, off = T - S;
    at::Tensor dx = at::empty_like(y);
    const float *yp = y.data_ptr<float>(), *dyp = dy.data_ptr<float>();
    float* dxp = dx.data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / T), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        softmax_row_backward(yp + i * T, dyp + i * T, dxp + i * T, std::min(T, i % S + off + 1), T, sc);
      }
    });
    return {dx, at::Tensor()};
  }
};

// ------------------------------------------------------------------ causal attention
// Row-major C[M, N] = op(A) op(B) + beta C. Where the build found the system BLAS (the libblas.so.3
// libtorch itself uses, DSFORGE_HAVE_BLAS) straight to sgemm, column-major, as the same product
// transposed with the operands swapped: no tensor views or operator dispatch per product. Otherwise
// through at::mm_out on views of the same memory.
#ifdef DSFORGE_HAVE_BLAS
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);
#endif

void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
#ifdef DSFORGE_HAVE_BLAS
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const float alpha = 1.0f;
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
#else
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  auto view = [&](const float* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<float*>(p), {trans ? cols : rows, trans ? rows : cols}, {ld, 1}, opts);
    return trans ? t.t() : t;
  };
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (beta == 0.0f) at::mm_out(c, view(A, M, K, lda, trans_a), view(B, K, N, ldb, trans_b));
  else c.addmm_(view(A, M, K, lda, trans_a), view(B, K, N, ldb, trans_b), beta, 1.0f);
#endif
}

// The same with bfloat16 operands and a float32 result, through oneDNN's dnnl_gemm_bf16bf16f32 (row-major,
// AVX512-BF16 dot products where the CPU has them): about twice sgemm's speed single-threaded on
// attention's shapes here (165-200 vs 80-110 GFLOP/s). libtorch links oneDNN dynamically on Debian; the
// symbol is looked up at run time, so a libtorch that hides it (oneDNN linked statically) simply
// leaves bfloat16 attention on the float32 kernel (bf16_gemm_available() says which).
using Bf16Gemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t,
                         float, float*, int64_t);
// A oneDNN without a bf16 GEMM for this CPU answers dnnl_unimplemented: one small product with a
// known result decides, once, before any kernel relies on it.
const char* bf16_gemm_missing_reason = "";
Bf16Gemm bf16_gemm_fn() {
  static const Bf16Gemm f = [] {
    auto g = reinterpret_cast<Bf16Gemm>(dlsym(RTLD_DEFAULT, "dnnl_gemm_bf16bf16f32"));
    if (!g) {
      bf16_gemm_missing_reason = "oneDNN's dnnl_gemm_bf16bf16f32 is not exported by this libtorch";
    } else {
      const uint16_t a[4] = {0x3f80, 0x4000, 0x4040, 0x4080}, b[4] = {0x3f80, 0x3f80, 0x4000, 0xbf80};  // [1 2; 3 4], [1 1; 2 -1]
      float c[4] = {0, 0, 0, 0};
      const bool ok = g('N', 'N', 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2) == 0 && c[0] == 5 && c[1] == -1 && c[2] == 11 && c[3] == -1;
      if (!ok) bf16_gemm_missing_reason = "oneDNN's dnnl_gemm_bf16bf16f32 failed its probe product (no bf16 GEMM for this CPU)";
      if (!ok) g = nullptr;
    }
    if (!g) log_info("kernels: ", bf16_gemm_missing_reason, "; bf16 attention and experts compute in float32");
    return g;
  }();
  return f;
}

void gemm_rm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
             const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int status = bf16_gemm_fn()(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  if (status != 0) throw std::runtime_error("dnnl_gemm_bf16bf16f32 failed with status " + std::to_string(status));
}

// OpenBLAS's OpenMP build sizes its threading by omp_get_max_threads(), which inside a parallel region
// still reports the outer team's size: a product called from one of the kernels' tasks then takes the
// threaded path for some shapes, and OpenBLAS serves one threaded call at a time, so the tasks'
// products run one after another (measured: 512x96x256 products from two tasks ran at 104 GFLOP/s in
// all, against 98 from one task and 187 with OPENBLAS_NUM_THREADS=1). Every task that calls a GEMM
// first says it has one thread; the setting belongs to the task and ends with it.
DSFORGE_ALWAYS_INLINE void blas_single_threaded_in_this_task() {
#ifdef DSFORGE_HAVE_OPENMP
  if (omp_in_parallel()) omp_set_num_threads(1);
#endif
}

// One (batch, head) slice per task, its products single-threaded with the scores in cache. Query rows
// go in blocks of kQueryBlock; a block's products stop at the last key its last row can see, so the
// masked upper triangle costs (almost) no multiplications: at S = T = 256, 10/16 of the full products.
constexpr int64_t kQueryBlock = 64;

// A [B, H, rows, cols] tensor whose last dimension is contiguous, read as B * H row-major matrices:
// slice i = (b, h) starts at b * stride(0) + h * stride(1), its rows stride(2) apart. Attention's
// operands are usually transposed views of [B, S, H, D] projections: read in place, no copies.
template <typename T>
struct Slices {
  T* base;
  int64_t H, s0, s1, ld;
  explicit Slices(const at::Tensor& t)
      : base(ptr<T>(t)), H(t.size(1)), s0(t.stride(0)), s1(t.stride(1)), ld(t.stride(2)) {}
  T* operator[](int64_t i) const { return base + (i / H) * s0 + (i % H) * s1; }
};

bool rows_contiguous(const at::Tensor& t) { return t.stride(3) == 1 && t.stride(2) >= t.size(3); }
at::Tensor rows_contiguous_or_copy(const at::Tensor& t) { return rows_contiguous(t) ? t : t.contiguous(); }

// [B, H, S, D] with the memory layout of [B, S, H, D]: what the callers reshape to [B, S, H * D] next.
at::Tensor empty_heads_interleaved(int64_t B, int64_t H, int64_t S, int64_t D, const at::TensorOptions& o) {
  return at::empty({B, S, H, D}, o).transpose(1, 2);
}

// rows x cols float32 results (leading dimension ldf) into T storage (leading dimension ldt).
template <typename T>
void store_rows(const float* f, int64_t ldf, T* t, int64_t ldt, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) store(t + r * ldt, j, f[r * ldf + j]);
  }
}

// T = float: float32 throughout, products written straight into their destinations. T = uint16_t
// (bfloat16, what bf16 autocast hands attention): bfloat16 operands, float32 accumulation, scores and
// softmax in float32; P is kept (and multiplied) in bfloat16 as autocast's own matmul would, dK and dV
// accumulate over the query blocks in float32 and are rounded once at the end.
template <typename T>
struct CausalAttentionFn : torch::autograd::Function<CausalAttentionFn<T>> {
  static constexpr bool kFloat = std::is_same<T, float>::value;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            double scale) {
    at::Tensor q = rows_contiguous_or_copy(q_in), k = rows_contiguous_or_copy(k_in), v = rows_contiguous_or_copy(v_in);
    const int64_t B = q.size(0), H = q.size(1), S = q.size(2), D = q.size(3), T_ = k.size(2), Dv = v.size(3), off = T_ - S;
    at::Tensor p = at::empty({B, H, S, T_}, q.options()), out = empty_heads_interleaved(B, H, S, Dv, q.options());
    const Slices<T> qs(q), ks(k), vs(v), os(out);
    T* pp = ptr<T>(p);
    const float sc = static_cast<float>(scale);
    at::parallel_for(0, B * H, 1, [&](int64_t b0, int64_t b1) {
      blas_single_threaded_in_this_task();
      std::vector<float> buf(kFloat ? 0 : static_cast<size_t>(kQueryBlock * (T_ + Dv)));  // scores, then outputs
      for (int64_t i = b0; i < b1; ++i) {
        const T *qi = qs[i], *ki = ks[i], *vi = vs[i];
        T *pi = pp + i * S * T_, *oi = os[i];
        for (int64_t r0 = 0; r0 < S; r0 += kQueryBlock) {
          const int64_t r1 = std::min(S, r0 + kQueryBlock), c = std::min(T_, r1 + off);
          float* scores = kFloat ? reinterpret_cast<float*>(pi + r0 * T_) : buf.data();
          gemm_rm(false, true, r1 - r0, c, D, qi + r0 * qs.ld, qs.ld, ki, ks.ld, 0.0f, scores, T_);  // Q K^T
          for (int64_t r = r0; r < r1; ++r)
            softmax_row(scores + (r - r0) * T_, pi + r * T_, std::min(T_, r + off + 1), T_, sc);
          float* o = kFloat ? reinterpret_cast<float*>(oi + r0 * os.ld) : buf.data() + kQueryBlock * T_;
          const int64_t ldo = kFloat ? os.ld : Dv;
          gemm_rm(false, false, r1 - r0, Dv, c, pi + r0 * T_, T_, vi, vs.ld, 0.0f, o, ldo);  // O = P V
          if (!kFloat) store_rows(o, ldo, oi + r0 * os.ld, os.ld, r1 - r0, Dv);
        }
      }
    });
    ctx->save_for_backward({q, k, v, p});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    at::Tensor q = saved[0], k = saved[1], v = saved[2], p = saved[3], dout = rows_contiguous_or_copy(grad_out[0]);
    const float sc = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const int64_t B = q.size(0), H = q.size(1), S = q.size(2), D = q.size(3), T_ = k.size(2), Dv = v.size(3), off = T_ - S;
    at::Tensor dq = empty_heads_interleaved(B, H, S, D, q.options()), dk = empty_heads_interleaved(B, H, T_, D, q.options()),
               dv = empty_heads_interleaved(B, H, T_, Dv, q.options());
    const Slices<T> qs(q), ks(k), vs(v), dos(dout), dqs(dq), dks(dk), dvs(dv);
    const T* pp = ptr<T>(p);
    at::parallel_for(0, B * H, 1, [&](int64_t b0, int64_t b1) {
      blas_single_threaded_in_this_task();
      // dP in float32; dS in T (in place over dP for float32); for bfloat16 also the float32 dQ block
      // and the dK, dV accumulators.
      const int64_t acc = kFloat ? 0 : kQueryBlock * D + T_ * (D + Dv);
      std::vector<float> fbuf(static_cast<size_t>(kQueryBlock * T_ + acc));
      std::vector<T> tbuf(kFloat ? 0 : static_cast<size_t>(kQueryBlock * T_));
      float* dp = fbuf.data();
      T* ds = kFloat ? reinterpret_cast<T*>(dp) : tbuf.data();
      float *dq_blk = dp + kQueryBlock * T_, *dk_acc = dq_blk + kQueryBlock * D, *dv_acc = dk_acc + T_ * D;
      for (int64_t i = b0; i < b1; ++i) {
        const T *qi = qs[i], *ki = ks[i], *vi = vs[i], *pi = pp + i * S * T_, *doi = dos[i];
        T *dqi = dqs[i], *dki = dks[i], *dvi = dvs[i];
        float* dk_out = kFloat ? reinterpret_cast<float*>(dki) : dk_acc;
        float* dv_out = kFloat ? reinterpret_cast<float*>(dvi) : dv_acc;
        const int64_t ldk = kFloat ? dks.ld : D, ldv = kFloat ? dvs.ld : Dv;
        // Last block first: it sees every key, so its products (beta = 0) initialise all of dK and dV.
        const int64_t n_blocks = (S + kQueryBlock - 1) / kQueryBlock;
        for (int64_t blk = n_blocks - 1; blk >= 0; --blk) {
          const int64_t r0 = blk * kQueryBlock, r1 = std::min(S, r0 + kQueryBlock), rows = r1 - r0;
          const int64_t c = blk == n_blocks - 1 ? T_ : std::min(T_, r1 + off);
          const float beta = blk == n_blocks - 1 ? 0.0f : 1.0f;
          const T *qb = qi + r0 * qs.ld, *dob = doi + r0 * dos.ld;
          gemm_rm(true, false, c, Dv, rows, pi + r0 * T_, T_, dob, dos.ld, beta, dv_out, ldv);  // dV += P^T dO
          gemm_rm(false, true, rows, c, Dv, dob, dos.ld, vi, vs.ld, 0.0f, dp, T_);              // dP = dO V^T
          for (int64_t r = r0; r < r1; ++r)  // dS = scale * P (dP - rowsum(P dP))
            softmax_row_backward(pi + r * T_, dp + (r - r0) * T_, ds + (r - r0) * T_, std::min(T_, r + off + 1), c, sc);
          float* dqo = kFloat ? reinterpret_cast<float*>(dqi + r0 * dqs.ld) : dq_blk;
          const int64_t ldq = kFloat ? dqs.ld : D;
          gemm_rm(false, false, rows, D, c, ds, T_, ki, ks.ld, 0.0f, dqo, ldq);  // dQ = dS K
          if (!kFloat) store_rows(dqo, ldq, dqi + r0 * dqs.ld, dqs.ld, rows, D);
          gemm_rm(true, false, c, D, rows, ds, T_, qb, qs.ld, beta, dk_out, ldk);  // dK += dS^T Q
        }
        if (!kFloat) {
          store_rows(dk_acc, D, dki, dks.ld, T_, D);
          store_rows(dv_acc, Dv, dvi, dvs.ld, T_, Dv);
        }
      }
    });
    return {dq, dk, dv, at::Tensor()};
  }
};

// ------------------------------------------------------------------ rotary embedding
// Rotates interleaved pairs (x[2i], x[2i+1]) of each last-dim vector of x [B, S, ..., d] by the angle of
// its position p = start + s (dim 1): y = (x_e c - x_o s, x_e s + x_o c) with c, s from the [P, d/2]
// tables. Backward rotates by -angle. x may be a strided view (a narrow of a projection) with a
// contiguous last dimension: read in place. Replaces two slices, four products, a stack and their
// backward passes per call.
struct RopeRows {
  int64_t rows, d;
  std::vector<int64_t> sizes, strides;  // of the dims before the last
  explicit RopeRows(const at::Tensor& x) : d(x.size(-1)) {
    rows = x.numel() / d;
    for (int64_t i = 0; i + 1 < x.dim(); ++i) {
      sizes.push_back(x.size(i));
      strides.push_back(x.stride(i));
    }
  }
  // Element offset of row r in x, and its position index along dim 1.
  int64_t offset(int64_t r, int64_t* s) const {
    int64_t off = 0;
    for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
      const int64_t k = r % sizes[static_cast<size_t>(i)];
      r /= sizes[static_cast<size_t>(i)];
      off += k * strides[static_cast<size_t>(i)];
      if (i == 1) *s = k;
    }
    return off;
  }
};

template <typename T>
void rope_rotate_rows(const RopeRows& rr, const T* xp, T* yp, const float* cp, const float* sp, int64_t start, float direction,
                      int64_t b, int64_t e) {
  const int64_t half = rr.d / 2;
  for (int64_t r = b; r < e; ++r) {
    int64_t s = 0;
    const T* xr = xp + rr.offset(r, &s);
    const float *c = cp + (start + s) * half, *sn = sp + (start + s) * half;
    T* yr = yp + r * rr.d;
    for (int64_t i = 0; i < half; ++i) {
      const float xe = load(xr, 2 * i), xo = load(xr, 2 * i + 1), si = direction * sn[i];
      store(yr, 2 * i, xe * c[i] - xo * si);
      store(yr, 2 * i + 1, xe * si + xo * c[i]);
    }
  }
}

// x float32 or bfloat16 (under autocast the projections are bf16), y the same; tables float32.
void rope_rotate(const at::Tensor& x, at::Tensor& y, const at::Tensor& cos, const at::Tensor& sin, int64_t start,
                 float direction) {
  const RopeRows rr(x);
  dispatch_storage(x, [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, rr.rows, std::max<int64_t>(1, kGrain / rr.d), [&](int64_t b, int64_t e) {
      rope_rotate_rows(rr, ptr<T>(x), ptr<T>(y), ptr<float>(cos), ptr<float>(sin), start, direction, b, e);
    });
  });
}

struct RopeFn : torch::autograd::Function<RopeFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            int64_t start) {
    at::Tensor y = at::empty(x.sizes(), x.options());
    rope_rotate(x, y, cos, sin, start, 1.0f);
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["start"] = start;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    at::Tensor dy = grad_out[0].stride(-1) == 1 ? grad_out[0] : grad_out[0].contiguous();
    at::Tensor dx = at::empty(dy.sizes(), dy.options());
    rope_rotate(dy, dx, saved[0], saved[1], ctx->saved_data["start"].toInt(), -1.0f);
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ------------------------------------------------------------------ routed SwiGLU experts
// Rows [o_e, o_e + n_e) of x (tokens grouped by expert) go through expert e:
// y = (silu(x Wg^T) * (x Wu^T)) Wd^T, weights w = {Wg_0, Wu_0, Wd_0, Wg_1, ...}. One expert per task,
// the busiest first, each expert's products single-threaded with its activations in cache: one
// autograd node instead of four per expert, and no per-product thread start-up for these small GEMMs.
// Keeps g = x Wg^T and u = x Wu^T for backward; experts that got no tokens get no gradient.
template <typename F>
void for_each_expert_busiest_first(const std::vector<int64_t>& counts, F&& f) {
  std::vector<int64_t> order;
  for (int64_t e = 0; e < static_cast<int64_t>(counts.size()); ++e)
    if (counts[static_cast<size_t>(e)] > 0) order.push_back(e);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return counts[static_cast<size_t>(a)] > counts[static_cast<size_t>(b)]; });
  std::atomic<size_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(order.size()));
  at::parallel_for(0, std::max<int64_t>(workers, 1), 1, [&](int64_t, int64_t) {
    blas_single_threaded_in_this_task();
    for (size_t i; (i = next++) < order.size();) f(order[i]);
  });
}

std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> o(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) o[e + 1] = o[e] + counts[e];
  return o;
}

// T = float: float32 throughout, products written straight into g, u, y, dx and the weight gradients.
// T = uint16_t (bfloat16, under bf16 autocast): x and the weights are rounded to bfloat16 once per call
// (as autocast's casts would), products accumulate in float32, g and u are kept in float32, h and the
// gradients fed to products are rounded to bfloat16, and the weight gradients come out of the products
// in float32, the master weights' own dtype, with no cast nodes in between. y is bfloat16, as an
// autocast linear's output would be. dx comes out in float32; autograd casts each returned gradient to
// its input's dtype.
template <typename T>
struct GroupedSwiGluFn : torch::autograd::Function<GroupedSwiGluFn<T>> {
  static constexpr bool kFloat = std::is_same<T, float>::value;
  static constexpr at::ScalarType kType = kFloat ? at::kFloat : at::kBFloat16;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const std::vector<int64_t>& counts,
                            at::TensorList w_in) {
    at::Tensor x = x_in.to(kType).contiguous();
    std::vector<at::Tensor> w;
    for (const at::Tensor& t : w_in) w.push_back(t.to(kType).contiguous());
    const int64_t M = x.size(0), d = x.size(1), I = w[0].size(0);
    const auto off = offsets_of(counts);
    const auto fopts = x.options().dtype(at::kFloat);
    at::Tensor g = at::empty({M, I}, fopts), u = at::empty({M, I}, fopts), y = at::empty({M, d}, x.options());
    const T* xp = ptr<T>(x);
    float *gp = ptr<float>(g), *up = ptr<float>(u);
    T* yp = ptr<T>(y);
    for_each_expert_busiest_first(counts, [&](int64_t e) {
      const int64_t o = off[static_cast<size_t>(e)], n = counts[static_cast<size_t>(e)];
      const T *xe = xp + o * d, *wg = ptr<T>(w[3 * e]), *wu = ptr<T>(w[3 * e + 1]), *wd = ptr<T>(w[3 * e + 2]);
      float *ge = gp + o * I, *ue = up + o * I;
      gemm_rm(false, true, n, I, d, xe, d, wg, d, 0.0f, ge, I);  // g = x Wg^T
      gemm_rm(false, true, n, I, d, xe, d, wu, d, 0.0f, ue, I);  // u = x Wu^T
      std::vector<T> he(static_cast<size_t>(n * I));
      silu_mul_forward(ge, ue, he.data(), 0, n * I);
      std::vector<float> ye(kFloat ? 0 : static_cast<size_t>(n * d));
      float* yo = kFloat ? reinterpret_cast<float*>(yp + o * d) : ye.data();
      gemm_rm(false, true, n, d, I, he.data(), I, wd, I, 0.0f, yo, d);  // y = h Wd^T
      if (!kFloat) store_rows(yo, d, yp + o * d, d, n, d);
    });
    std::vector<at::Tensor> saved = {x, g, u};
    saved.insert(saved.end(), w.begin(), w.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["counts"] = counts;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &g = saved[1], &u = saved[2];
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const auto off = offsets_of(counts);
    at::Tensor dy = grad_out[0].to(kType).contiguous();
    const int64_t I = g.size(1), E = static_cast<int64_t>(counts.size()), d = x.size(1);
    // Every row belongs to an expert with rows; float32 (for bfloat16 the sum of two float32 products).
    at::Tensor dx = at::empty(x.sizes(), x.options().dtype(at::kFloat));
    variable_list grads(static_cast<size_t>(2 + 3 * E));  // x, counts, then one per weight
    const T *xp = ptr<T>(x), *dyp = ptr<T>(dy);
    const float *gp = ptr<float>(g), *up = ptr<float>(u);
    float* dxp = ptr<float>(dx);
    for (int64_t e = 0; e < E; ++e)  // weight gradients are allocated here, outside the parallel region
      if (counts[static_cast<size_t>(e)] > 0)
        for (int64_t j = 0; j < 3; ++j)
          grads[static_cast<size_t>(2 + 3 * e + j)] = at::empty(saved[static_cast<size_t>(3 + 3 * e + j)].sizes(), dx.options());
    for_each_expert_busiest_first(counts, [&](int64_t e) {
      const int64_t o = off[static_cast<size_t>(e)], n = counts[static_cast<size_t>(e)];
      auto wt = [&](int64_t j) { return ptr<T>(saved[static_cast<size_t>(3 + 3 * e + j)]); };
      auto gr = [&](int64_t j) { return ptr<float>(grads[static_cast<size_t>(2 + 3 * e + j)]); };
      const T *wg = wt(0), *wu = wt(1), *wd = wt(2), *xe = xp + o * d, *dye = dyp + o * d;
      const float *ge = gp + o * I, *ue = up + o * I;
      std::vector<T> he(static_cast<size_t>(n * I)), dg(he.size()), du(he.size());
      std::vector<float> dh(he.size());
      silu_mul_forward(ge, ue, he.data(), 0, n * I);
      gemm_rm(true, false, d, I, n, dye, d, he.data(), I, 0.0f, gr(2), I);  // dWd = dy^T h
      gemm_rm(false, false, n, I, d, dye, d, wd, I, 0.0f, dh.data(), I);     // dh = dy Wd
      silu_mul_backward(ge, ue, dh.data(), dg.data(), du.data(), 0, n * I);
      gemm_rm(false, false, n, d, I, dg.data(), I, wg, d, 0.0f, dxp + o * d, d);  // dx = dg Wg
      gemm_rm(false, false, n, d, I, du.data(), I, wu, d, 1.0f, dxp + o * d, d);  //    + du Wu
      gemm_rm(true, false, I, d, n, dg.data(), I, xe, d, 0.0f, gr(0), d);         // dWg = dg^T x
      gemm_rm(true, false, I, d, n, du.data(), I, xe, d, 0.0f, gr(1), d);         // dWu = du^T x
    });
    grads[0] = dx;
    return grads;
  }
};

}  // namespace

bool bf16_gemm_available() { return bf16_gemm_fn() != nullptr; }

bool fused_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("DSFORGE_FUSED");
    const bool off = v && std::string(v) == "0";
    if (off) log_info("kernels: DSFORGE_FUSED=0: the fused kernels are off, every op runs as its ATen composition");
    return !off;
  }();
  return on;
}

std::vector<FastPath> fast_paths() {
  std::vector<FastPath> out;
  out.push_back({"fused kernels", fused_enabled(), fused_enabled() ? "cross-entropy, GELU, SwiGLU, RMSNorm, RoPE, "
                                                                     "attention, grouped experts, AdamW"
                                                                   : "DSFORGE_FUSED=0 in the environment"});
#ifdef DSFORGE_HAVE_BLAS
  out.push_back({"direct sgemm", true, "attention products call the system libblas.so.3 directly"});
#else
  out.push_back({"direct sgemm", false, "no BLAS found at build time: attention products go through at::mm_out"});
#endif
  const bool bf16 = bf16_gemm_available();
  out.push_back({"bf16 GEMM", bf16, bf16 ? "oneDNN dnnl_gemm_bf16bf16f32 (bf16 attention and experts)" : bf16_gemm_missing_reason});
#ifdef DSFORGE_HAVE_OPENMP
  out.push_back({"single-threaded BLAS per task", true, "kernel tasks set OpenMP's thread count to 1 for their products"});
#else
  out.push_back({"single-threaded BLAS per task", false,
                 "built without OpenMP: a threaded BLAS may serialise the tasks' products"});
#endif
  return out;
}

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, double label_smoothing, int64_t ignore_index) {
  at::Tensor flat = logits.reshape({-1, logits.size(-1)});
  if (!fast_path({&flat}, /*allow_bf16=*/true))
    return at::cross_entropy_loss(flat.to(flat.scalar_type() == at::kDouble ? at::kDouble : at::kFloat),
                                  targets.reshape({-1}), {}, at::Reduction::Mean, ignore_index, label_smoothing);
  if (flat.requires_grad() && at::GradMode::is_enabled())
    return CrossEntropyFn::apply(flat, targets.reshape({-1}), label_smoothing, ignore_index);
  return CrossEntropyFn::forward(nullptr, flat, targets.reshape({-1}), label_smoothing, ignore_index);
}

at::Tensor gelu_tanh(const at::Tensor& x) {
  if (!fast_path({&x}, /*allow_bf16=*/true)) return at::gelu(x, "tanh");
  return GeluFn::apply(x);
}

at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  if (!fast_path({&gate, &up}, /*allow_bf16=*/true) || !gate.sizes().equals(up.sizes())) return at::silu(gate) * up;
  return SiluMulFn::apply(gate, up);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (!fast_path({&x}, /*allow_bf16=*/true) || !fast_path({&weight}) || weight.numel() != x.size(-1)) {
    const auto ct = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor xf = x.to(ct);
    return (xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight.to(ct)).to(x.scalar_type());
  }
  return RmsNormFn::apply(x, weight, eps);
}

at::Tensor causal_softmax(const at::Tensor& scores, double scale) {
  if (!fast_path({&scores}) || scores.dim() < 2 || scores.size(-1) < scores.size(-2)) {
    const int64_t S = scores.size(-2), T = scores.size(-1);
    const auto ct = scores.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor q = at::arange(S, scores.options().dtype(at::kLong)).unsqueeze(1) + (T - S);
    at::Tensor k = at::arange(T, scores.options().dtype(at::kLong)).unsqueeze(0);
    return at::softmax((scores.to(ct) * scale).masked_fill(k > q, -INFINITY), -1);
  }
  return CausalSoftmaxFn::apply(scores, scale);
}

bool rope_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t start) {
  return fast_path({&cos, &sin}) && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) && x.device().is_cpu() &&
         x.dim() >= 2 && x.stride(-1) == 1 && x.size(-1) % 2 == 0 && cos.dim() == 2 && cos.size(1) * 2 == x.size(-1) &&
         sin.sizes().equals(cos.sizes()) && start >= 0 && start + x.size(1) <= cos.size(0);
}

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t start) {
  TORCH_CHECK(rope_applies(x, cos, sin, start), "rope: no fast path for these tensors (check rope_applies first)");
  return RopeFn::apply(x, cos, sin, start);
}

bool autocast_enabled(c10::DeviceType t) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(t);  // libtorch 2.4 folded the per-device queries into one
#else
  return t == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

c10::ScalarType autocast_dtype_of(c10::DeviceType t) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::get_autocast_dtype(t);
#else
  return t == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
}

namespace {
// Under CPU autocast the grouped experts run in bfloat16 when autocast's dtype is bfloat16 and the
// bf16 GEMM is at hand; any other autocast leaves them to the per-expert ATen path.
bool grouped_in_bf16() {
  return autocast_enabled(c10::DeviceType::CPU) && autocast_dtype_of(c10::DeviceType::CPU) == at::kBFloat16 &&
         bf16_gemm_available();
}
}  // namespace

bool grouped_swiglu_applies(const at::Tensor& x, at::TensorList weights) {
  if (!fused_enabled() || x.dim() != 2 || weights.size() % 3 != 0) return false;
  const bool bf16 = grouped_in_bf16();
  if (!bf16 && autocast_enabled(c10::DeviceType::CPU)) return false;
  auto ok = [&](const at::Tensor& t) {
    return t.defined() && t.device().is_cpu() && (t.scalar_type() == at::kFloat || (bf16 && t.scalar_type() == at::kBFloat16));
  };
  if (!ok(x)) return false;
  for (const at::Tensor& w : weights)
    if (!ok(w) || w.dim() != 2) return false;
  return true;
}

at::Tensor grouped_swiglu(const at::Tensor& x, const std::vector<int64_t>& counts, at::TensorList weights) {
  TORCH_CHECK(weights.size() == 3 * counts.size(), "grouped_swiglu: expected 3 weights per expert");
  if (grouped_in_bf16()) return GroupedSwiGluFn<uint16_t>::apply(x, counts, weights);
  return GroupedSwiGluFn<float>::apply(x, counts, weights);
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const auto dt = q.scalar_type();
  const bool low = dt == at::kBFloat16 || dt == at::kHalf;
  if (!fused_enabled() || (dt != at::kFloat && !low) || k.scalar_type() != dt || v.scalar_type() != dt ||
      !q.device().is_cpu() || q.dim() != 4 || k.size(2) < q.size(2))
    return at::matmul(causal_softmax(at::matmul(q, k.transpose(-2, -1)), scale).to(v.scalar_type()), v);
  if (dt == at::kBFloat16 && bf16_gemm_fn()) return CausalAttentionFn<uint16_t>::apply(q, k, v, scale);
  // Otherwise (float16, or no bfloat16 GEMM at hand) in float32 through the fused kernel: one conversion
  // each way, layouts kept, rather than unfused in low precision.
  if (low) return CausalAttentionFn<float>::apply(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), scale).to(dt);
  return CausalAttentionFn<float>::apply(q, k, v, scale);
}

double sum_of_squares(const at::Tensor& t) {
  if (!fast_path({&t})) return t.to(at::kDouble).pow(2).sum().item<double>();
  const float* p = t.data_ptr<float>();
  const int64_t n = t.numel(), n_blocks = (n + kGrain - 1) / kGrain;
  std::vector<double> partial(static_cast<size_t>(n_blocks), 0.0);  // fixed blocks: deterministic
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      float s = 0;
      const int64_t end = std::min(n, (blk + 1) * kGrain);
#pragma omp simd reduction(+ : s)
      for (int64_t i = blk * kGrain; i < end; ++i) s += p[i] * p[i];
      partial[static_cast<size_t>(blk)] = s;
    }
  });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

void adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                  const AdamWStep& s) {
  if (!fast_path({&param, &grad, &exp_avg, &exp_avg_sq})) {
    at::NoGradGuard no_grad;
    at::Tensor g = s.grad_scale != 1.0 ? grad * s.grad_scale : grad;
    if (s.weight_decay > 0) param.mul_(1.0 - s.lr * s.weight_decay);
    exp_avg.mul_(s.beta1).add_(g, 1.0 - s.beta1);
    exp_avg_sq.mul_(s.beta2).addcmul_(g, g, 1.0 - s.beta2);
    param.addcdiv_(exp_avg, (exp_avg_sq / s.bias_correction2).sqrt_().add_(s.eps), -s.lr / s.bias_correction1);
    return;
  }
  float *p = param.data_ptr<float>(), *m = exp_avg.data_ptr<float>(), *v = exp_avg_sq.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const float b1 = static_cast<float>(s.beta1), b2 = static_cast<float>(s.beta2), gs = static_cast<float>(s.grad_scale);
  const float decay = static_cast<float>(1.0 - s.lr * s.weight_decay), step = static_cast<float>(s.lr / s.bias_correction1);
  const float inv_bc2 = static_cast<float>(1.0 / s.bias_correction2), eps = static_cast<float>(s.eps);
  at::parallel_for(0, param.numel(), kGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float gi = g[i] * gs;
      m[i] = b1 * m[i] + (1.0f - b1) * gi;
      v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
      p[i] = p[i] * decay - step * m[i] / (std::sqrt(v[i] * inv_bc2) + eps);
    }
  });
}

}  // namespace dsforge::kernels
