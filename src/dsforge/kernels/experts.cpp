// The grouped-experts kernel family: all routed SwiGLU experts of a MoE layer in one autograd node, one
// expert per task, busiest first, each expert's products (platform.h's gemm_rm) single-threaded with its
// activations in cache, the SwiGLU product in the vector loops.
#include "dsforge/kernels/compat.h"
#include "dsforge/kernels/internal.h"

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

namespace dsforge::kernels {
namespace {

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
      vec::silu_mul_forward(ge, ue, he.data(), 0, n * I);
      std::vector<float> ye(kFloat ? 0 : static_cast<size_t>(n * d));
      float* yo = kFloat ? reinterpret_cast<float*>(yp + o * d) : ye.data();
      gemm_rm(false, true, n, d, I, he.data(), I, wd, I, 0.0f, yo, d);  // y = h Wd^T
      if (!kFloat) vec::store_rows(yo, d, yp + o * d, d, n, d);
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
      vec::silu_mul_forward(ge, ue, he.data(), 0, n * I);
      gemm_rm(true, false, d, I, n, dye, d, he.data(), I, 0.0f, gr(2), I);  // dWd = dy^T h
      gemm_rm(false, false, n, I, d, dye, d, wd, I, 0.0f, dh.data(), I);     // dh = dy Wd
      vec::silu_mul_backward(ge, ue, dh.data(), dg.data(), du.data(), 0, n * I);
      gemm_rm(false, false, n, d, I, dg.data(), I, wg, d, 0.0f, dxp + o * d, d);  // dx = dg Wg
      gemm_rm(false, false, n, d, I, du.data(), I, wu, d, 1.0f, dxp + o * d, d);  //    + du Wu
      gemm_rm(true, false, I, d, n, dg.data(), I, xe, d, 0.0f, gr(0), d);         // dWg = dg^T x
      gemm_rm(true, false, I, d, n, du.data(), I, xe, d, 0.0f, gr(1), d);         // dWu = du^T x
    });
    grads[0] = dx;
    return grads;
  }
};

// Under CPU autocast the grouped experts run in bfloat16 when autocast's dtype is bfloat16 and the
// bf16 GEMM is at hand; any other autocast leaves them to the per-expert ATen path.
bool grouped_in_bf16() {
  return compat::autocast_enabled(c10::DeviceType::CPU) && compat::autocast_dtype(c10::DeviceType::CPU) == at::kBFloat16 &&
         bf16_gemm_available();
}

}  // namespace

bool grouped_swiglu_applies(const at::Tensor& x, at::TensorList weights) {
  if (!fused_enabled() || x.dim() != 2 || weights.size() % 3 != 0) return false;
  const bool bf16 = grouped_in_bf16();
  if (!bf16 && compat::autocast_enabled(c10::DeviceType::CPU)) return false;
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

}  // namespace dsforge::kernels
