// The element-wise kernel family: cross-entropy, tanh-GELU, the SwiGLU product, RMSNorm, the scaled
// causal softmax and the rotary embedding, as autograd functions around the vector loops (vec.h).
#include "dsforge/kernels/internal.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace dsforge::kernels {
namespace {

// ------------------------------------------------------------------ cross-entropy
// Per row: loss = (1 - e)(lse - x_t) + e (lse - mean x); the gradient (softmax - (1 - e) onehot(t) - e / V) / N
// is written in the forward pass (vec::cross_entropy_row). Logits may be bfloat16 (the LM head under bf16
// autocast): read as float32, the gradient rounded to bfloat16 once, no float32 copy of the logits.
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
              vec::cross_entropy_row(x0 + i * V, g, e_buf.data(), V, t[i], static_cast<float>(eps), inv_n);
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
struct GeluFn : torch::autograd::Function<GeluFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x) {
    at::Tensor y = at::empty_like(x);
    dispatch_storage(x, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) { vec::gelu_forward(ptr<T>(x), ptr<T>(y), b, e); });
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
                       [&](int64_t b, int64_t e) { vec::gelu_backward(ptr<T>(x), ptr<T>(dy), ptr<T>(dx), b, e); });
    });
    return {dx};
  }
};

// ------------------------------------------------------------------ SwiGLU product
struct SiluMulFn : torch::autograd::Function<SiluMulFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    at::Tensor y = at::empty_like(gate);
    dispatch_storage(gate, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, gate.numel(), kGrain,
                       [&](int64_t b, int64_t e) { vec::silu_mul_forward(ptr<T>(gate), ptr<T>(up), ptr<T>(y), b, e); });
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
        vec::silu_mul_backward(ptr<T>(gate), ptr<T>(up), ptr<T>(dy), ptr<T>(dg), ptr<T>(du), b, e);
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
struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, double eps) {
    const int64_t d = x.size(-1), rows = x.numel() / d;
    at::Tensor y = at::empty_like(x), r = at::empty({rows}, x.options().dtype(at::kFloat));
    dispatch_storage(x, [&](auto tag) {
      using T = decltype(tag);
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / d), [&](int64_t b, int64_t e) {
        vec::rms_norm_rows(ptr<T>(x), ptr<float>(w), ptr<T>(y), ptr<float>(r), d, static_cast<float>(eps), b, e);
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
          vec::rms_norm_backward_rows(ptr<T>(x), ptr<float>(w), ptr<float>(r), ptr<T>(dy), ptr<T>(dx), ptr<float>(partial) + blk * d,
                                 d, blk * block, std::min(rows, (blk + 1) * block));
      });
    });
    return {dx, partial.sum(0), at::Tensor()};
  }
};

// ------------------------------------------------------------------ scaled causal softmax
// Scaling, masking and softmax in one pass per row (masked keys cost no exp), and one pass back.
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
        vec::softmax_row(yp + i * T, yp + i * T, n, T, sc);
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
        vec::softmax_row_backward(yp + i * T, dyp + i * T, dxp + i * T, std::min(T, i % S + off + 1), T, sc);
      }
    });
    return {dx, at::Tensor()};
  }
};

// ------------------------------------------------------------------ rotary embedding
// Rotates interleaved pairs (x[2i], x[2i+1]) of each last-dim vector of x [B, S, ..., d] by the angle of
// its position p = start + s (dim 1): y = (x_e c - x_o s, x_e s + x_o c) with c, s from the [P, d/2]
// tables. Backward rotates by -angle. x may be a strided view (a narrow of a projection) with a
// contiguous last dimension: read in place. Replaces two slices, four products, a stack and their
// backward passes per call.
RopeRows rope_rows_of(const at::Tensor& x) {
  RopeRows rr;
  rr.d = x.size(-1);
  rr.rows = x.numel() / rr.d;
  rr.n_dims = static_cast<int>(x.dim() - 1);
  for (int i = 0; i < rr.n_dims; ++i) {
    rr.sizes[i] = x.size(i);
    rr.strides[i] = x.stride(i);
  }
  return rr;
}

// x float32 or bfloat16 (under autocast the projections are bf16), y the same; tables float32.
void rope_rotate(const at::Tensor& x, at::Tensor& y, const at::Tensor& cos, const at::Tensor& sin, int64_t start,
                 float direction) {
  const RopeRows rr = rope_rows_of(x);
  dispatch_storage(x, [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, rr.rows, std::max<int64_t>(1, kGrain / rr.d), [&](int64_t b, int64_t e) {
      vec::rope_rows(rr, ptr<T>(x), ptr<T>(y), ptr<float>(cos), ptr<float>(sin), start, direction, b, e);
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

}  // namespace

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
         x.dim() >= 2 && x.dim() <= RopeRows::kMaxDims + 1 && x.stride(-1) == 1 && x.size(-1) % 2 == 0 && cos.dim() == 2 &&
         cos.size(1) * 2 == x.size(-1) && sin.sizes().equals(cos.sizes()) && start >= 0 && start + x.size(1) <= cos.size(0);
}

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t start) {
  TORCH_CHECK(rope_applies(x, cos, sin, start), "rope: no fast path for these tensors (check rope_applies first)");
  return RopeFn::apply(x, cos, sin, start);
}

}  // namespace dsforge::kernels
