// The attention kernel family: causal attention softmax(scale q k^T + mask) v, one (batch, head) slice
// per task with its products (platform.h's gemm_rm: sgemm, or oneDNN's bf16 GEMM) and the masked softmax
// between them (the vector loops) on one core, the scores in cache.
#include "dsforge/kernels/internal.h"

#include <algorithm>
#include <type_traits>
#include <vector>

namespace dsforge::kernels {
namespace {

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
            vec::softmax_row(scores + (r - r0) * T_, pi + r * T_, std::min(T_, r + off + 1), T_, sc);
          float* o = kFloat ? reinterpret_cast<float*>(oi + r0 * os.ld) : buf.data() + kQueryBlock * T_;
          const int64_t ldo = kFloat ? os.ld : Dv;
          gemm_rm(false, false, r1 - r0, Dv, c, pi + r0 * T_, T_, vi, vs.ld, 0.0f, o, ldo);  // O = P V
          if (!kFloat) vec::store_rows(o, ldo, oi + r0 * os.ld, os.ld, r1 - r0, Dv);
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
            vec::softmax_row_backward(pi + r * T_, dp + (r - r0) * T_, ds + (r - r0) * T_, std::min(T_, r + off + 1), c, sc);
          float* dqo = kFloat ? reinterpret_cast<float*>(dqi + r0 * dqs.ld) : dq_blk;
          const int64_t ldq = kFloat ? dqs.ld : D;
          gemm_rm(false, false, rows, D, c, ds, T_, ki, ks.ld, 0.0f, dqo, ldq);  // dQ = dS K
          if (!kFloat) vec::store_rows(dqo, ldq, dqi + r0 * dqs.ld, dqs.ld, rows, D);
          gemm_rm(true, false, c, D, rows, ds, T_, qb, qs.ld, beta, dk_out, ldk);  // dK += dS^T Q
        }
        if (!kFloat) {
          vec::store_rows(dk_acc, D, dki, dks.ld, T_, D);
          vec::store_rows(dv_acc, Dv, dvi, dvs.ld, T_, Dv);
        }
      }
    });
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const auto dt = q.scalar_type();
  const bool low = dt == at::kBFloat16 || dt == at::kHalf;
  if (!fused_enabled() || (dt != at::kFloat && !low) || k.scalar_type() != dt || v.scalar_type() != dt ||
      !q.device().is_cpu() || q.dim() != 4 || k.size(2) < q.size(2))
    return at::matmul(causal_softmax(at::matmul(q, k.transpose(-2, -1)), scale).to(v.scalar_type()), v);
  if (dt == at::kBFloat16 && bf16_gemm_available()) return CausalAttentionFn<uint16_t>::apply(q, k, v, scale);
  // Otherwise (float16, or no bfloat16 GEMM at hand) in float32 through the fused kernel: one conversion
  // each way, layouts kept, rather than unfused in low precision.
  if (low) return CausalAttentionFn<float>::apply(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), scale).to(dt);
  return CausalAttentionFn<float>::apply(q, k, v, scale);
}

}  // namespace dsforge::kernels
