// The fused kernels against the ATen compositions they replace (values and gradients), against
// float64 finite differences, and on the edge cases: ignored targets, label smoothing, masked rows.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <dlfcn.h>

#include <atomic>
#include <random>
#include <stdexcept>
#include <thread>

#include "dsforge/kernels/fused.h"
#include "dsforge/kernels/platform.h"
#include "dsforge/train/precision.h"
#include "test_util.h"

using namespace dsforge;

namespace {
// Gradient of sum(f(x) * w) with respect to each input, for a fixed random w.
std::vector<at::Tensor> grads_of(const std::function<at::Tensor(const std::vector<at::Tensor>&)>& f,
                                 std::vector<at::Tensor> inputs, const at::Tensor& w) {
  for (auto& t : inputs) t = t.detach().clone().requires_grad_(true);
  at::Tensor y = f(inputs);
  (w.defined() ? (y * w).sum() : y.sum()).backward();
  std::vector<at::Tensor> out;
  for (auto& t : inputs) out.push_back(t.grad());
  return out;
}

// Routed-expert weights {gate, up, down} per expert ([I, d], [I, d], [d, I]), leaves requiring grad.
std::vector<at::Tensor> expert_weights(int64_t E, int64_t d, int64_t I) {
  std::vector<at::Tensor> ws;
  for (int64_t e = 0; e < E; ++e)
    for (auto shape : {std::vector<int64_t>{I, d}, std::vector<int64_t>{I, d}, std::vector<int64_t>{d, I}})
      ws.push_back((at::randn(shape) * 0.3).requires_grad_(true));
  return ws;
}

// The experts one by one in ATen over rows of x grouped by expert (counts[e] rows for expert e).
at::Tensor experts_one_by_one(const at::Tensor& x, const std::vector<int64_t>& counts, const std::vector<at::Tensor>& ws) {
  std::vector<at::Tensor> outs;
  int64_t o = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    at::Tensor xe = x.narrow(0, o, counts[e]);
    o += counts[e];
    outs.push_back(at::linear(at::silu(at::linear(xe, ws[3 * e])) * at::linear(xe, ws[3 * e + 1]), ws[3 * e + 2]));
  }
  return at::cat(outs, 0);
}

void expect_close(const at::Tensor& a, const at::Tensor& b, double tol, const char* what) {
  const double err = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  const double scale = std::max(1.0, b.abs().max().item<double>());
  EXPECT_LT(err / scale, tol) << what << ": max abs diff " << err;
}
}  // namespace

TEST(Kernels, CrossEntropyMatchesAtenWithSmoothingAndIgnoredRows) {
  at::manual_seed(0);
  at::Tensor logits = at::randn({37, 301}) * 3;
  at::Tensor targets = at::randint(301, {37}, at::kLong);
  targets[5] = -100;
  targets[17] = -100;
  for (double eps : {0.0, 0.1}) {
    auto fused = [&](const std::vector<at::Tensor>& in) { return kernels::cross_entropy(in[0], targets, eps); };
    auto ref = [&](const std::vector<at::Tensor>& in) {
      return at::cross_entropy_loss(in[0], targets, {}, at::Reduction::Mean, -100, eps);
    };
    expect_close(fused({logits}), ref({logits}), 1e-6, "loss");
    // A non-unit upstream gradient (the 1/N of gradient accumulation, the MTP weight) scales it.
    at::Tensor w = at::full({}, 0.3);
    auto gf = grads_of(fused, {logits}, w), gr = grads_of(ref, {logits}, w);
    expect_close(gf[0], gr[0], 1e-6, "gradient");
    EXPECT_EQ(gf[0][5].abs().sum().item<double>(), 0.0);  // ignored rows get no gradient
  }
  // Without autograd (evaluation) the same loss, and no gradient buffer.
  {
    at::NoGradGuard ng;
    expect_close(kernels::cross_entropy(logits, targets), at::cross_entropy_loss(logits, targets), 1e-6, "no-grad loss");
  }
  EXPECT_THROW(kernels::cross_entropy(logits, at::full({37}, 301, at::kLong)), std::exception);
}

TEST(Kernels, ElementwiseMatchAtenAndFiniteDifferences) {
  at::manual_seed(1);
  at::Tensor x = at::randn({6, 257}) * 2, u = at::randn({6, 257}), w = at::randn({6, 257});
  // GELU (tanh form)
  auto gf = grads_of([](auto& in) { return kernels::gelu_tanh(in[0]); }, {x}, w);
  auto gr = grads_of([](auto& in) { return at::gelu(in[0], "tanh"); }, {x}, w);
  expect_close(kernels::gelu_tanh(x), at::gelu(x, "tanh"), 1e-6, "gelu");
  expect_close(gf[0], gr[0], 1e-5, "gelu grad");
  // SwiGLU product
  auto sf = grads_of([](auto& in) { return kernels::silu_mul(in[0], in[1]); }, {x, u}, w);
  auto sr = grads_of([](auto& in) { return at::silu(in[0]) * in[1]; }, {x, u}, w);
  expect_close(kernels::silu_mul(x, u), at::silu(x) * u, 1e-6, "silu_mul");
  expect_close(sf[0], sr[0], 1e-5, "silu_mul d gate");
  expect_close(sf[1], sr[1], 1e-5, "silu_mul d up");
  // Finite differences (float64 reference of the same formula) for one GELU element.
  const double v = 0.7, h = 1e-5;
  auto gelu64 = [](double t) { return 0.5 * t * (1 + std::tanh(std::sqrt(2 / M_PI) * (t + 0.044715 * t * t * t))); };
  at::Tensor xv = at::full({1}, v).requires_grad_(true);
  kernels::gelu_tanh(xv).sum().backward();
  EXPECT_NEAR(xv.grad().item<double>(), (gelu64(v + h) - gelu64(v - h)) / (2 * h), 1e-5);
}

// Under bf16 autocast GELU and SwiGLU get bfloat16 tensors: computed in float32 and rounded once,
// so each output is the exact (float64) result rounded to bfloat16, within one bf16 step (2^-8
// relative) where float32 rounding lands on the other side of a rounding boundary; gradients likewise.
// (float64, not ATen's float32 GELU: its 1 + tanh(z) loses digits to cancellation for negative inputs.)
TEST(Kernels, ElementwiseBf16IsTheFloatResultRoundedOnce) {
  at::manual_seed(4);
  at::Tensor x = (at::randn({8, 515}) * 3).to(at::kBFloat16), u = at::randn({8, 515}).to(at::kBFloat16);
  at::Tensor w = at::randn({8, 515}).to(at::kBFloat16);
  auto check = [](const at::Tensor& got, const at::Tensor& want_exact, const char* what) {
    EXPECT_EQ(got.scalar_type(), at::kBFloat16) << what;
    at::Tensor g = got.to(at::kFloat), r = want_exact.to(at::kFloat).to(at::kBFloat16).to(at::kFloat);
    const double rel = ((g - r).abs() / r.abs().clamp_min(1e-3)).max().item<double>();
    EXPECT_LE(rel, 1.0 / 128) << what;  // at most one bf16 step apart
    const double exact = (g == r).to(at::kDouble).mean().item<double>();
    EXPECT_GT(exact, 0.97) << what << ": only " << exact << " of the elements equal the rounded exact result";
  };
  at::Tensor xf = x.to(at::kDouble), uf = u.to(at::kDouble), wf = w.to(at::kDouble);
  check(kernels::gelu_tanh(x), at::gelu(xf, "tanh"), "gelu");
  check(kernels::silu_mul(x, u), at::silu(xf) * uf, "silu_mul");
  // Gradients: the bf16 upstream gradient w times the float derivative at the same (bf16) input.
  auto gb = grads_of([](auto& in) { return kernels::gelu_tanh(in[0]); }, {x}, w);
  auto gr = grads_of([](auto& in) { return at::gelu(in[0], "tanh"); }, {xf}, wf);
  check(gb[0], gr[0], "gelu grad");
  auto sb = grads_of([](auto& in) { return kernels::silu_mul(in[0], in[1]); }, {x, u}, w);
  auto sr = grads_of([](auto& in) { return at::silu(in[0]) * in[1]; }, {xf, uf}, wf);
  check(sb[0], sr[0], "silu_mul d gate");
  check(sb[1], sr[1], "silu_mul d up");
}

// Under bf16 autocast MLA's norms and rotary embeddings get bf16 projections: RMSNorm (float32 weight)
// and RoPE (float32 tables, on a strided view) read and write bf16 and compute in float32, each output
// the float64 result rounded once; the gradients likewise, the weight's gradient float32.
TEST(Kernels, RmsNormAndRopeTakeBf16) {
  at::manual_seed(7);
  auto rounded_once = [](const at::Tensor& got, const at::Tensor& want, double tol, const char* what) {
    EXPECT_EQ(got.scalar_type(), at::kBFloat16) << what;
    expect_close(got, want.to(at::kBFloat16), tol, what);
  };
  at::Tensor x = (at::randn({8, 300}) * 2).to(at::kBFloat16), g = at::rand({300}) + 0.5;
  at::Tensor w = at::randn({8, 300}).to(at::kBFloat16);
  auto rms_ref = [](const std::vector<at::Tensor>& in) {
    return in[0] * at::rsqrt(in[0].pow(2).mean(-1, true) + 1e-6) * in[1];
  };
  std::vector<at::Tensor> in16 = {x, g}, in64 = {x.to(at::kDouble), g.to(at::kDouble)};
  auto rms = [](const std::vector<at::Tensor>& in) { return kernels::rms_norm(in[0], in[1], 1e-6); };
  rounded_once(rms(in16), rms_ref(in64), 1.0 / 128, "rms_norm");
  auto gb = grads_of(rms, in16, w), gr = grads_of(rms_ref, in64, w.to(at::kDouble));
  rounded_once(gb[0], gr[0], 1.0 / 64, "rms_norm d x");
  EXPECT_EQ(gb[1].scalar_type(), at::kFloat);
  expect_close(gb[1], gr[1], 1e-5, "rms_norm d weight");

  const int64_t B = 2, S = 7, H = 3, dn = 5, dr = 8, P = 20, start = 4;
  at::Tensor theta = at::rand({P, dr / 2}) * 6.0;
  at::Tensor cos = theta.cos(), sin = theta.sin();
  at::Tensor proj = at::randn({B, S, H, dn + dr}).to(at::kBFloat16), wr = at::randn({B, S, H, dr}).to(at::kBFloat16);
  auto rope = [&](const std::vector<at::Tensor>& in) { return kernels::rope(in[0].narrow(-1, dn, dr), cos, sin, start); };
  auto rope_ref = [&](const std::vector<at::Tensor>& in) {
    at::Tensor xr = in[0].narrow(-1, dn, dr);
    at::Tensor c = cos.narrow(0, start, S).view({1, S, 1, dr / 2}).to(at::kDouble), s = sin.narrow(0, start, S).view({1, S, 1, dr / 2}).to(at::kDouble);
    at::Tensor even = xr.slice(-1, 0, c10::nullopt, 2), odd = xr.slice(-1, 1, c10::nullopt, 2);
    return at::stack({even * c - odd * s, even * s + odd * c}, -1).flatten(-2);
  };
  ASSERT_TRUE(kernels::rope_applies(proj.narrow(-1, dn, dr), cos, sin, start));
  rounded_once(rope({proj}), rope_ref({proj.to(at::kDouble)}), 1.0 / 128, "rope");
  auto rb = grads_of(rope, {proj}, wr), rr = grads_of(rope_ref, {proj.to(at::kDouble)}, wr.to(at::kDouble));
  rounded_once(rb[0], rr[0], 1.0 / 128, "rope d x");
}

// bf16 logits (the LM head under autocast) are read as they are: the loss is the float32 loss of the
// same values, and the gradient (bf16, like the logits) the float32 gradient rounded once.
TEST(Kernels, CrossEntropyReadsBf16LogitsDirectly) {
  at::manual_seed(6);
  at::Tensor logits = (at::randn({29, 301}) * 3).to(at::kBFloat16), targets = at::randint(301, {29}, at::kLong);
  targets[4] = -100;
  at::Tensor lf = logits.to(at::kDouble);
  for (double eps : {0.0, 0.1}) {
    at::Tensor lb = logits.clone().requires_grad_(true), lr = lf.clone().requires_grad_(true);
    at::Tensor loss = kernels::cross_entropy(lb, targets, eps);
    at::Tensor ref = at::cross_entropy_loss(lr, targets, {}, at::Reduction::Mean, -100, eps);
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>());
    (loss * 0.5).backward();
    (ref * 0.5).backward();
    EXPECT_EQ(lb.grad().scalar_type(), at::kBFloat16);
    at::Tensor want = lr.grad().to(at::kFloat).to(at::kBFloat16).to(at::kFloat), got = lb.grad().to(at::kFloat);
    EXPECT_LE((got - want).abs().max().item<double>(), want.abs().max().item<double>() / 128) << "eps " << eps;
    EXPECT_EQ(got[4].abs().sum().item<double>(), 0.0);
  }
}

// The fused routed experts against running each expert's SwiGLU on its rows: outputs, the gradient
// of the input and of every weight; an expert with no rows gets no gradient at all.
TEST(Kernels, GroupedSwiGluMatchesExpertByExpert) {
  at::manual_seed(5);
  const int64_t d = 24, I = 10;
  const std::vector<int64_t> counts = {7, 0, 13, 1, 5};
  const int64_t E = static_cast<int64_t>(counts.size()), M = 26;
  at::Tensor x = at::randn({M, d}), w_out = at::randn({M, d});
  std::vector<at::Tensor> ws = expert_weights(E, d, I);
  ASSERT_TRUE(kernels::grouped_swiglu_applies(x, ws));
  auto run = [&](bool fused) {
    at::Tensor xi = x.clone().requires_grad_(true);
    for (auto& w : ws) w.mutable_grad() = at::Tensor();
    at::Tensor y = fused ? kernels::grouped_swiglu(xi, counts, ws) : experts_one_by_one(xi, counts, ws);
    (y * w_out).sum().backward();
    std::vector<at::Tensor> r = {y.detach(), xi.grad()};
    for (auto& w : ws) r.push_back(w.grad());
    return r;
  };
  auto fused = run(true), ref = run(false);
  expect_close(fused[0], ref[0], 1e-5, "outputs");
  expect_close(fused[1], ref[1], 1e-5, "d x");
  for (size_t i = 0; i < ws.size(); ++i) {
    const bool idle = counts[i / 3] == 0;
    EXPECT_EQ(fused[2 + i].defined(), !idle) << "weight " << i;
    if (!idle) expect_close(fused[2 + i], ref[2 + i], 1e-5, "d weight");
  }
}

// Under bf16 autocast (as the trainer runs DeepSeek with train.precision = bf16) the same node runs
// bfloat16 products with float32 accumulation: against the float64 expert-by-expert composition on the
// bf16-rounded x and weights, within a few bf16 steps; y is bfloat16 like an autocast linear's output,
// the weight gradients float32 like the weights, idle experts still get none.
TEST(Kernels, GroupedSwiGluUnderBf16AutocastMatchesFloat64) {
  if (!kernels::bf16_gemm_available()) GTEST_SKIP() << "this libtorch exposes no bf16 GEMM";
  at::manual_seed(6);
  const int64_t d = 40, I = 24;
  const std::vector<int64_t> counts = {70, 0, 33, 1, 50};
  const int64_t E = static_cast<int64_t>(counts.size()), M = 154;
  at::Tensor x = at::randn({M, d}), w_out = at::randn({M, d}, at::kDouble);
  std::vector<at::Tensor> ws = expert_weights(E, d, I), ws64;
  for (const at::Tensor& w : ws) ws64.push_back(w.detach().to(at::kBFloat16).to(at::kDouble).requires_grad_(true));
  at::Tensor xi = x.clone().requires_grad_(true), x64 = x.to(at::kBFloat16).to(at::kDouble).requires_grad_(true);
  at::Tensor y;
  {
    train::AutocastScope autocast(c10::Device(c10::kCPU), at::kBFloat16);
    ASSERT_TRUE(kernels::grouped_swiglu_applies(xi, ws));
    y = kernels::grouped_swiglu(xi, counts, ws);
  }
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  (y.to(at::kDouble) * w_out).sum().backward();
  at::Tensor y64 = experts_one_by_one(x64, counts, ws64);
  (y64 * w_out).sum().backward();
  expect_close(y, y64, 2e-2, "outputs");
  EXPECT_EQ(xi.grad().scalar_type(), at::kFloat);
  expect_close(xi.grad(), x64.grad(), 2e-2, "d x");
  for (size_t i = 0; i < ws.size(); ++i) {
    const bool idle = counts[i / 3] == 0;
    EXPECT_EQ(ws[i].grad().defined(), !idle) << "weight " << i;
    if (idle) continue;
    EXPECT_EQ(ws[i].grad().scalar_type(), at::kFloat);
    expect_close(ws[i].grad(), ws64[i].grad(), 2e-2, "d weight");
  }
  // A bfloat16 x gets a bfloat16 gradient (autograd casts the node's float32 dx to the input's dtype).
  at::Tensor xb = x.to(at::kBFloat16).requires_grad_(true);
  {
    train::AutocastScope autocast(c10::Device(c10::kCPU), at::kBFloat16);
    kernels::grouped_swiglu(xb, counts, ws).to(at::kFloat).sum().backward();
  }
  EXPECT_EQ(xb.grad().scalar_type(), at::kBFloat16);
}

TEST(Kernels, RmsNormMatchesAten) {
  at::manual_seed(2);
  at::Tensor x = at::randn({3, 5, 96}), g = at::randn({96}) + 1, w = at::randn({3, 5, 96});
  auto ref = [](const std::vector<at::Tensor>& in) {
    return in[0] * at::rsqrt(in[0].pow(2).mean(-1, true) + 1e-6) * in[1];
  };
  auto fused = [](const std::vector<at::Tensor>& in) { return kernels::rms_norm(in[0], in[1], 1e-6); };
  expect_close(fused({x, g}), ref({x, g}), 1e-6, "rms_norm");
  auto gf = grads_of(fused, {x, g}, w), gr = grads_of(ref, {x, g}, w);
  expect_close(gf[0], gr[0], 1e-5, "d x");
  expect_close(gf[1], gr[1], 1e-5, "d weight");
}

TEST(Kernels, CausalSoftmaxAndAttentionMatchTheMaskedComposition) {
  at::manual_seed(3);
  for (int64_t T : {9, 13}) {  // T > S: queries sit at the end (a prefix of cached keys)
    const int64_t S = 9;
    at::Tensor q = at::randn({2, 3, S, 8}), k = at::randn({2, 3, T, 8}), v = at::randn({2, 3, T, 5});
    const double scale = 0.35;
    at::Tensor mask = at::full({S, T}, -INFINITY).triu(T - S + 1);
    auto ref = [&](const std::vector<at::Tensor>& in) {
      return at::matmul(at::softmax(at::matmul(in[0], in[1].transpose(-2, -1)) * scale + mask, -1), in[2]);
    };
    auto fused = [&](const std::vector<at::Tensor>& in) { return kernels::causal_attention(in[0], in[1], in[2], scale); };
    at::Tensor w = at::randn({2, 3, S, 5});
    expect_close(fused({q, k, v}), ref({q, k, v}), 1e-5, "attention");
    auto gf = grads_of(fused, {q, k, v}, w), gr = grads_of(ref, {q, k, v}, w);
    expect_close(gf[0], gr[0], 1e-5, "d q");
    expect_close(gf[1], gr[1], 1e-5, "d k");
    expect_close(gf[2], gr[2], 1e-5, "d v");
    // The softmax alone, on non-contiguous-free raw scores.
    at::Tensor s = at::randn({2, 3, S, T});
    auto sref = [&](const std::vector<at::Tensor>& in) { return at::softmax(in[0] * scale + mask, -1); };
    auto sfused = [&](const std::vector<at::Tensor>& in) { return kernels::causal_softmax(in[0], scale); };
    expect_close(sfused({s}), sref({s}), 1e-6, "causal softmax");
    expect_close(grads_of(sfused, {s}, s)[0], grads_of(sref, {s}, s)[0], 1e-5, "causal softmax grad");
  }
}

// As the models call it: q, k, v transposed views of [B, S, H, D] projections (v a narrow of a wider
// one), the output reshaped to [B, S, H * Dv], and enough queries for several blocks of 64 (S = 150,
// with and without a prefix of 20 cached keys): read in place, values and gradients as the composition.
TEST(Kernels, CausalAttentionOnStridedViewsAcrossQueryBlocks) {
  at::manual_seed(8);
  const int64_t B = 2, H = 3, S = 150, D = 8, Dv = 5;
  for (int64_t T : {S, S + 20}) {
    at::Tensor qp = at::randn({B, S, H, D}), kp = at::randn({B, T, H, D}), vp = at::randn({B, T, H, Dv + 4});
    at::Tensor w = at::randn({B, S, H * Dv});
    at::Tensor mask = at::full({S, T}, -INFINITY).triu(T - S + 1);
    const double scale = 0.3;
    auto views = [&](const std::vector<at::Tensor>& in) {
      return std::vector<at::Tensor>{in[0].transpose(1, 2), in[1].transpose(1, 2), in[2].narrow(-1, 2, Dv).transpose(1, 2)};
    };
    auto ref = [&](const std::vector<at::Tensor>& in) {
      auto t = views(in);
      at::Tensor o = at::matmul(at::softmax(at::matmul(t[0], t[1].transpose(-2, -1)) * scale + mask, -1), t[2]);
      return o.transpose(1, 2).reshape({B, S, H * Dv});
    };
    auto fused = [&](const std::vector<at::Tensor>& in) {
      auto t = views(in);
      EXPECT_FALSE(t[0].is_contiguous());
      return kernels::causal_attention(t[0], t[1], t[2], scale).transpose(1, 2).reshape({B, S, H * Dv});
    };
    expect_close(fused({qp, kp, vp}), ref({qp, kp, vp}), 1e-5, "attention");
    auto gf = grads_of(fused, {qp, kp, vp}, w), gr = grads_of(ref, {qp, kp, vp}, w);
    expect_close(gf[0], gr[0], 1e-5, "d q");
    expect_close(gf[1], gr[1], 1e-5, "d k");
    expect_close(gf[2], gr[2], 1e-5, "d v");
  }
}

// Under bf16 autocast attention gets bfloat16 q, k, v: bfloat16 products with float32 accumulation
// (oneDNN's bf16 GEMM, which Debian's libtorch loads), P and dS rounded to bfloat16 as autocast's own
// matmuls would, dK and dV accumulated over the query blocks in float32. Against the float64
// composition on the same bfloat16 inputs: every value and gradient within a few bf16 steps (the
// errors measured here are 0.005-0.012 on values of magnitude ~2-3).
TEST(Kernels, CausalAttentionInBf16MatchesTheFloat64Composition) {
  if (dlopen("libdnnl.so.2", RTLD_NOW | RTLD_NOLOAD)) {
    EXPECT_TRUE(kernels::bf16_gemm_available());
  }
  at::manual_seed(10);
  const int64_t B = 2, H = 3, S = 150, D = 16, Dv = 8;
  for (int64_t T : {S, S + 20}) {
    at::Tensor qp = at::randn({B, S, H, D}).to(at::kBFloat16), kp = at::randn({B, T, H, D}).to(at::kBFloat16);
    at::Tensor vp = at::randn({B, T, H, Dv + 4}).to(at::kBFloat16), w = at::randn({B, H, S, Dv}, at::kDouble);
    at::Tensor mask = at::full({S, T}, -INFINITY, at::kDouble).triu(T - S + 1);
    const double scale = 0.25;
    auto views = [&](const std::vector<at::Tensor>& in) {
      return std::vector<at::Tensor>{in[0].transpose(1, 2), in[1].transpose(1, 2), in[2].narrow(-1, 2, Dv).transpose(1, 2)};
    };
    auto ref = [&](const std::vector<at::Tensor>& in) {
      auto t = views(in);
      return at::matmul(at::softmax(at::matmul(t[0], t[1].transpose(-2, -1)) * scale + mask, -1), t[2]);
    };
    auto fused = [&](const std::vector<at::Tensor>& in) {
      auto t = views(in);
      at::Tensor o = kernels::causal_attention(t[0], t[1], t[2], scale);
      EXPECT_EQ(o.scalar_type(), at::kBFloat16);
      return o.to(at::kDouble);
    };
    std::vector<at::Tensor> in16 = {qp, kp, vp}, in64 = {qp.to(at::kDouble), kp.to(at::kDouble), vp.to(at::kDouble)};
    expect_close(fused(in16), ref(in64), 2e-2, "attention");
    auto gf = grads_of(fused, in16, w), gr = grads_of(ref, in64, w);
    EXPECT_EQ(gf[0].scalar_type(), at::kBFloat16);
    expect_close(gf[0], gr[0], 2e-2, "d q");
    expect_close(gf[1], gr[1], 2e-2, "d k");
    expect_close(gf[2], gr[2], 2e-2, "d v");
  }
}

// Rotary embedding on a strided view (the rope part of a [B, S, H, d_nope + d_rope] projection) at an
// offset position against the slice-and-stack composition, values and gradients; backward is the
// inverse rotation, so a rotation followed by its gradient pass with dy = y returns x.
TEST(Kernels, RopeOnAStridedViewMatchesTheComposition) {
  at::manual_seed(9);
  const int64_t B = 2, S = 7, H = 3, dn = 5, dr = 8, P = 20, start = 4;
  at::Tensor theta = at::rand({P, dr / 2}) * 6.0;
  at::Tensor cos = theta.cos(), sin = theta.sin();
  at::Tensor proj = at::randn({B, S, H, dn + dr}), w = at::randn({B, S, H, dr});
  auto fused = [&](const std::vector<at::Tensor>& in) { return kernels::rope(in[0].narrow(-1, dn, dr), cos, sin, start); };
  auto ref = [&](const std::vector<at::Tensor>& in) {
    at::Tensor x = in[0].narrow(-1, dn, dr);
    at::Tensor c = cos.narrow(0, start, S).view({1, S, 1, dr / 2}), s = sin.narrow(0, start, S).view({1, S, 1, dr / 2});
    at::Tensor even = x.slice(-1, 0, c10::nullopt, 2), odd = x.slice(-1, 1, c10::nullopt, 2);
    return at::stack({even * c - odd * s, even * s + odd * c}, -1).flatten(-2);
  };
  ASSERT_TRUE(kernels::rope_applies(proj.narrow(-1, dn, dr), cos, sin, start));
  EXPECT_FALSE(kernels::rope_applies(proj.narrow(-1, dn, dr), cos, sin, P - S + 1));  // past the table
  expect_close(fused({proj}), ref({proj}), 1e-6, "rope");
  auto gf = grads_of(fused, {proj}, w), gr = grads_of(ref, {proj}, w);
  expect_close(gf[0], gr[0], 1e-6, "rope grad");
  EXPECT_EQ(gf[0].narrow(-1, 0, dn).abs().sum().item<double>(), 0.0);  // the non-rope part gets nothing
}

TEST(Kernels, AdamWUpdateAndSumOfSquaresMatchTheirFormulas) {
  at::manual_seed(4);
  at::Tensor p = at::randn({1000}), g = at::randn({1000}), m = at::randn({1000}) * 0.1, v = at::rand({1000}) * 0.1;
  at::Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
  kernels::AdamWStep s{1e-2, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975, 0.5};
  kernels::adamw_update(p, g, m, v, s);
  // The formula, in float64.
  at::Tensor gd = g.to(at::kDouble) * 0.5;
  at::Tensor md = m2.to(at::kDouble) * 0.9 + gd * 0.1, vd = v2.to(at::kDouble) * 0.95 + gd * gd * 0.05;
  at::Tensor pd = p2.to(at::kDouble) * (1 - 1e-2 * 0.1) - (1e-2 / 0.19) * md / ((vd / 0.0975).sqrt() + 1e-8);
  expect_close(m, md, 1e-6, "exp_avg");
  expect_close(v, vd, 1e-6, "exp_avg_sq");
  expect_close(p, pd, 1e-5, "param");
  at::Tensor big = at::randn({100003});
  const double ref = big.to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(kernels::sum_of_squares(big), ref, 1e-6 * ref);  // float partial sums per block, double total
}

TEST(Kernels, SamplerExpMatchesTheLibraryOnEveryIsa) {
  // The sampler's weights exp(x - shift) in float64 against std::exp: arguments across the reduction's
  // range boundaries (multiples of ln 2 / 2), large negative ones near the cut at -708, exactly 0 for
  // a masked (-inf) token, NaN kept, nothing written past n; the sum equal to the weights' sum up to the summation order.
  const std::string start_isa = kernels::vector_loops().isa;
  std::vector<double> args;
  for (int i = -4000; i <= 400; ++i) args.push_back(i * 0.173286795139986);  // ln2 / 4 steps
  for (int i = 0; i < 2000; ++i) args.push_back(-30.0 + i * 0.0150013);
  for (double a : {0.0, -1e-300, 1e-17, -707.9, -708.0, 709.0, -0.34657359027997264, 0.34657359027997264}) args.push_back(a);
  for (const std::string& isa : kernels::supported_vector_isas()) {
    kernels::set_vector_isa(isa);
    for (double shift : {0.0, 2.5}) {
      std::vector<double> x(args.size());
      for (size_t i = 0; i < x.size(); ++i) x[i] = args[i] + shift;
      x.push_back(-INFINITY);
      x.push_back(123.0);  // past n
      std::vector<double> y = x;
      const double sum = kernels::vector_loops().exp_shifted_sum_f64(y.data(), static_cast<int64_t>(y.size()) - 1, shift);
      double want_sum = 0, worst = 0;
      for (size_t i = 0; i + 2 < x.size(); ++i) {
        const double want = std::exp(x[i] - shift);
        want_sum += want;
        worst = std::max(worst, std::abs(y[i] - want) / want);
      }
      EXPECT_LT(worst, 4e-16) << isa << ": relative error, worst over " << args.size() << " arguments";
      EXPECT_EQ(y[y.size() - 2], 0.0) << isa << ": exp(-inf)";
      EXPECT_EQ(y.back(), 123.0) << isa << ": past n, untouched";
      EXPECT_NEAR(sum, want_sum, 1e-15 * want_sum) << isa;
      std::vector<double> nan_arg{NAN};
      kernels::vector_loops().exp_shifted_sum_f64(nan_arg.data(), 1, 0.0);
      EXPECT_TRUE(std::isnan(nan_arg[0])) << isa;
    }
  }
  kernels::set_vector_isa(start_isa);
}

// The vector loops come compiled for several instruction sets and one is chosen at start (platform.h).
// Each ISA this CPU runs gives the generic loops' results on the same random inputs, forward and backward,
// float32 within float rounding (vector widths change the order of the sums) and bfloat16 within one
// bf16 step; the odd sizes leave remainders after every vector width.
TEST(Kernels, EveryVectorIsaAgreesWithGeneric) {
  const std::vector<std::string> isas = kernels::supported_vector_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), "generic");
  const std::string start_isa = kernels::vector_loops().isa;
  if (!std::getenv("DSFORGE_KERNEL_ISA")) {
    EXPECT_EQ(start_isa, isas.front()) << "the best ISA is chosen by default";
  }
  bool listed = false;  // `dsforge doctor` names the ISA in use
  for (const auto& p : kernels::fast_paths())
    if (p.name == "vector kernels") listed = p.detail.rfind(start_isa + ":", 0) == 0;
  EXPECT_TRUE(listed);
  EXPECT_THROW(kernels::set_vector_isa("sse9"), std::invalid_argument);

  at::manual_seed(11);
  const auto bf = at::kBFloat16;
  at::Tensor logits = at::randn({37, 1001}) * 3, targets = at::randint(1001, {37}, at::kLong);
  targets[5] = -100;
  at::Tensor x = at::randn({3, 1237}) * 2, u = at::randn({3, 1237}), w = at::randn({3, 1237});
  at::Tensor rx = at::randn({33, 257}), rg = at::rand({257}) + 0.5, rw = at::randn({33, 257});
  const int64_t S = 9, dr = 16;
  at::Tensor theta = at::rand({S + 3, dr / 2}) * 6.0, cos = theta.cos(), sin = theta.sin();
  at::Tensor proj = at::randn({2, S, 3, 5 + dr}), pw = at::randn({2, S, 3, dr});
  at::Tensor scores = at::randn({2, 3, 11, 13}), sw = at::randn({2, 3, 11, 13});
  at::Tensor q = at::randn({2, 2, 70, 24}), k = at::randn({2, 2, 70, 24}), v = at::randn({2, 2, 70, 24});
  at::Tensor aw = at::randn({2, 2, 70, 24});
  at::Tensor p0 = at::randn({10007}), g0 = at::randn({10007}), m0 = at::randn({10007}) * 0.1, v0 = at::rand({10007}) * 0.1;

  // Every kernel's outputs and gradients, in a fixed order.
  auto run_all = [&] {
    std::vector<at::Tensor> out;
    auto add = [&](const std::vector<at::Tensor>& ts) { out.insert(out.end(), ts.begin(), ts.end()); };
    for (auto dt : {at::kFloat, bf}) {
      for (double eps : {0.0, 0.1}) {
        at::Tensor l = logits.to(dt).detach().clone().requires_grad_(true), loss = kernels::cross_entropy(l, targets, eps);
        loss.backward();
        add({loss, l.grad()});
      }
      auto one = [&](auto f, std::vector<at::Tensor> in, const at::Tensor& wt) {
        for (auto& t : in) t = t.to(dt);
        std::vector<at::Tensor> cast = in;
        add({f(cast)});
        add(grads_of(f, in, wt.to(dt)));
      };
      one([](auto& in) { return kernels::gelu_tanh(in[0]); }, {x}, w);
      one([](auto& in) { return kernels::silu_mul(in[0], in[1]); }, {x, u}, w);
      one([&](auto& in) { return kernels::rms_norm(in[0], rg, 1e-6); }, {rx}, rw);
      one([&](auto& in) { return kernels::rope(in[0].narrow(-1, 5, dr), cos, sin, 2); }, {proj}, pw);
      one([](auto& in) { return kernels::causal_attention(in[0], in[1], in[2], 0.2); }, {q, k, v}, aw);
    }
    add(grads_of([](auto& in) { return kernels::causal_softmax(in[0], 0.3); }, {scores}, sw));
    add({kernels::causal_softmax(scores, 0.3)});
    at::Tensor p = p0.clone(), m = m0.clone(), vv = v0.clone();
    kernels::adamw_update(p, g0, m, vv, kernels::AdamWStep{1e-2, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975, 0.5});
    add({p, m, vv, at::scalar_tensor(kernels::sum_of_squares(p0), at::kDouble)});
    return out;
  };

  kernels::set_vector_isa("generic");
  const std::vector<at::Tensor> ref = run_all();
  for (const std::string& isa : isas) {
    kernels::set_vector_isa(isa);
    EXPECT_EQ(kernels::vector_loops().isa, isa);
    const std::vector<at::Tensor> got = run_all();
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      const bool low = ref[i].scalar_type() == bf;
      const std::string what = isa + " output " + std::to_string(i);
      EXPECT_EQ(got[i].scalar_type(), ref[i].scalar_type()) << what;
      expect_close(got[i], ref[i], low ? 1.0 / 64 : 1e-4, what.c_str());
    }
  }
  kernels::set_vector_isa(start_isa);
}

TEST(Kernels, FewRowProductsMatchFloat64OnEveryIsa) {
  // C = A B^T + beta C and C = A B + beta C for the row counts of a decode batch (the blocks of rows,
  // their remainders, one past the largest count gemm_rm sends here), column counts off the blocks and
  // the vector width, K not a multiple of the width, leading dimensions wider than the rows; beta = 0
  // must ignore a NaN already in C, and columns past N are never written.
  const std::string start_isa = kernels::vector_loops().isa;
  at::manual_seed(5);
  for (const std::string& isa : kernels::supported_vector_isas()) {
    kernels::set_vector_isa(isa);
    const kernels::VectorLoops& vl = kernels::vector_loops();
    EXPECT_GE(vl.few_rows_max, 2) << isa;
    for (bool nt : {true, false})
      for (int64_t M : {1, 2, 3, 4, 5, 7, 8, 13, 17})
        for (auto [N, K] : {std::pair<int64_t, int64_t>{4, 16}, {7, 5}, {33, 37}, {96, 256}, {6, 1}, {150, 64}, {64, 150}}) {
          const int64_t lda = K + 3, ldb = (nt ? K : N) + 1, ldc = N + 2;
          at::Tensor A = at::randn({M, lda}), B = at::randn({nt ? N : K, ldb}), C0 = at::randn({M, ldc});
          const at::Tensor a = A.narrow(1, 0, K).to(at::kDouble), b = B.narrow(1, 0, nt ? K : N).to(at::kDouble);
          const at::Tensor ref = at::matmul(a, nt ? b.t() : b);
          for (float beta : {0.0f, 1.0f, 0.5f}) {
            at::Tensor C = C0.clone();
            if (beta == 0.0f) C.fill_(NAN);
            (nt ? vl.gemm_nt_f32 : vl.gemm_nn_f32)(M, N, K, A.data_ptr<float>(), lda, B.data_ptr<float>(), ldb, beta,
                                                   C.data_ptr<float>(), ldc);
            const at::Tensor want = beta == 0.0f ? ref : ref + C0.narrow(1, 0, N).to(at::kDouble) * beta;
            const double err = (C.narrow(1, 0, N).to(at::kDouble) - want).abs().max().item<double>();
            const std::string what = isa + (nt ? " NT" : " NN") + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                     " K=" + std::to_string(K) + " beta=" + std::to_string(beta);
            EXPECT_LT(err, 1e-4 * std::sqrt(static_cast<double>(K))) << what;
            const at::Tensor pad = C.narrow(1, N, ldc - N);
            EXPECT_TRUE(beta == 0.0f ? pad.isnan().all().item<bool>() : at::equal(pad, C0.narrow(1, N, ldc - N))) << what;
          }
        }
  }
  kernels::set_vector_isa(start_isa);
}

TEST(Kernels, Bf16WeightProductMatchesFloat64AndEachRowAlone) {
  // C = A B^T + beta C with B in bfloat16 (a decode step's bf16 weights): against float64 products of
  // the widened weights, for the row counts of a batch and past them, N and K off the blocks and the
  // vector width (masked bf16 tails); every row equal, bit for bit, to that row computed alone (what
  // lets the server batch rows without changing any one's tokens); columns past N never written.
  const std::string start_isa = kernels::vector_loops().isa;
  at::manual_seed(6);
  for (const std::string& isa : kernels::supported_vector_isas()) {
    kernels::set_vector_isa(isa);
    for (int64_t M : {1, 2, 3, 4, 5, 8, 13, 16, 17, 33})
      for (auto [N, K] : {std::pair<int64_t, int64_t>{4, 16}, {7, 5}, {33, 37}, {96, 256}, {6, 1}, {20, 150}}) {
        const int64_t lda = K + 3, ldb = K + 1, ldc = N + 2;
        const at::Tensor A = at::randn({M, lda}), Bw = at::randn({N, ldb}).to(at::kBFloat16), C0 = at::randn({M, ldc});
        const auto* b = reinterpret_cast<const uint16_t*>(Bw.data_ptr<at::BFloat16>());
        const at::Tensor ref = at::matmul(A.narrow(1, 0, K).to(at::kDouble), Bw.narrow(1, 0, K).to(at::kDouble).t());
        for (float beta : {0.0f, 1.0f}) {
          at::Tensor C = C0.clone();
          if (beta == 0.0f) C.fill_(NAN);
          kernels::gemm_nt_bf16w(M, N, K, A.data_ptr<float>(), lda, b, ldb, beta, C.data_ptr<float>(), ldc);
          const at::Tensor want = beta == 0.0f ? ref : ref + C0.narrow(1, 0, N).to(at::kDouble);
          const std::string what = isa + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                   " beta=" + std::to_string(beta);
          EXPECT_LT((C.narrow(1, 0, N).to(at::kDouble) - want).abs().max().item<double>(), 1e-4 * std::sqrt(static_cast<double>(K)))
              << what;
          const at::Tensor pad = C.narrow(1, N, ldc - N);
          EXPECT_TRUE(beta == 0.0f ? pad.isnan().all().item<bool>() : at::equal(pad, C0.narrow(1, N, ldc - N))) << what;
          for (int64_t r = 0; r < M; r += std::max<int64_t>(1, M / 4)) {
            at::Tensor one = C0.narrow(0, r, 1).clone();
            kernels::gemm_nt_bf16w(1, N, K, A[r].data_ptr<float>(), lda, b, ldb, beta, one.data_ptr<float>(), ldc);
            EXPECT_TRUE(at::equal(one.narrow(1, 0, N), C.narrow(0, r, 1).narrow(1, 0, N))) << what << " row " << r << " alone";
          }
        }
      }
  }
  kernels::set_vector_isa(start_isa);
}

namespace {

// C[m, n] = sum_k A[m, k] B[n, k] in 64-bit integers: the definition the int8 kernels must equal.
std::vector<int64_t> u8s8_reference(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* B,
                                    int64_t ldb) {
  std::vector<int64_t> c(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) c[m * N + n] += int64_t{A[m * lda + k]} * int64_t{B[n * ldb + k]};
  return c;
}

}  // namespace

TEST(Kernels, Int8ProductsAreExactOnEveryIsa) {
  // Every form (each ISA's loops, and vpdpbusd where the CPU has AVX512-VNNI) against the integer
  // definition: row counts through the 4-row passes and their remainders, N off the 4- and 2-row tiles,
  // K off every step (16, 32, 64 bytes) and the masked tails, leading dimensions wider than K, the full
  // byte ranges, and the extreme case (255 x -128 over K = 4096) that saturates any int16 shortcut.
  std::vector<std::pair<std::string, decltype(kernels::VectorLoops::gemm_u8s8_nt)>> forms;
  for (const std::string& isa : kernels::supported_vector_isas()) {
    const kernels::VectorLoops& vl = isa == "avx512" ? kernels::vector_loops_avx512()
                                     : isa == "avx2" ? kernels::vector_loops_avx2()
                                                     : kernels::vector_loops_generic();
    forms.push_back({isa, vl.gemm_u8s8_nt});
    if (vl.gemm_u8s8_nt_vnni && __builtin_cpu_supports("avx512vnni")) forms.push_back({isa + "-vnni", vl.gemm_u8s8_nt_vnni});
  }
  EXPECT_GE(forms.size(), 1u);
  std::mt19937 rng(11);
  for (const auto& [name, fn] : forms) {
    for (int64_t M : {1, 2, 3, 4, 5, 8, 11, 16, 17})
      for (auto [N, K] : {std::pair<int64_t, int64_t>{1, 1}, {3, 15}, {4, 16}, {5, 31}, {9, 63}, {8, 64}, {7, 65}, {17, 200},
                          {6, 1000}}) {
        const int64_t lda = K + 5, ldb = K + 3, ldc = N + 2;
        std::vector<uint8_t> A(static_cast<size_t>(M * lda));
        std::vector<int8_t> B(static_cast<size_t>(N * ldb));
        for (auto& a : A) a = static_cast<uint8_t>(rng() & 0xFF);
        for (auto& b : B) b = static_cast<int8_t>(static_cast<int>(rng() & 0xFF) - 128);
        std::vector<int32_t> C(static_cast<size_t>(M * ldc), 0x5A5A5A5A);
        fn(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc);
        const std::vector<int64_t> want = u8s8_reference(M, N, K, A.data(), lda, B.data(), ldb);
        int64_t wrong = 0;
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < N; ++n) wrong += C[m * ldc + n] != want[m * N + n];
          for (int64_t n = N; n < ldc; ++n) wrong += C[m * ldc + n] != 0x5A5A5A5A;  // never written
        }
        EXPECT_EQ(wrong, 0) << name << " M=" << M << " N=" << N << " K=" << K;
      }
    const int64_t K = 4096;
    std::vector<uint8_t> A(2 * K, 255);
    std::vector<int8_t> B(3 * K, -128);
    std::vector<int32_t> C(6);
    fn(2, 3, K, A.data(), K, B.data(), K, C.data(), 3);
    for (int32_t c : C) EXPECT_EQ(c, -255 * 128 * K) << name;
  }
}

TEST(Kernels, LinearW8a8EqualsItsDefinitionAndTracksTheFloatProduct) {
  // y = sx sw (qx . qw) with qx = round(x / sx), sx = max|x| / 127 per row: computed here in double from
  // the same integers; and against the float product x W^T the error is what 8-bit rounding of both
  // operands allows (well under 2% of |x| |w| per output here).
  at::manual_seed(3);
  for (int64_t M : {1, 3, 16})
    for (auto [N, K] : {std::pair<int64_t, int64_t>{64, 128}, {33, 200}}) {
      const at::Tensor x = at::randn({M, K}), w = at::randn({N, K}) * 0.05;
      const at::Tensor sw = w.abs().amax(1) / 127.0, qw = (w / sw.unsqueeze(1)).round().to(at::kChar).contiguous();
      std::vector<int32_t> sums(static_cast<size_t>(N));
      kernels::int8_row_sums(qw.data_ptr<int8_t>(), N, K, sums.data());
      const at::Tensor swc = sw.contiguous();
      at::Tensor y = at::empty({M, N});
      kernels::linear_w8a8(M, N, K, x.data_ptr<float>(), K, qw.data_ptr<int8_t>(), swc.data_ptr<float>(), sums.data(),
                           y.data_ptr<float>(), N);
      // The kernel's own arithmetic for qx: x times 127 / max|x| in float, rounded half to even.
      const at::Tensor amax = x.abs().amax(1), sx = amax / 127.0, qx = (x * (127.0 / amax).unsqueeze(1)).round();
      const at::Tensor def = at::matmul(qx.to(at::kDouble), qw.to(at::kDouble).t()) * sx.to(at::kDouble).unsqueeze(1) *
                             sw.to(at::kDouble).unsqueeze(0);
      EXPECT_LT((y.to(at::kDouble) - def).abs().max().item<double>(), 1e-5 * def.abs().max().item<double>() + 1e-6)
          << "M=" << M << " N=" << N;
      const at::Tensor ref = at::matmul(x, w.t());
      const at::Tensor bound = at::outer(x.norm(2, 1), w.norm(2, 1)) * 0.02;
      EXPECT_TRUE(((y - ref).abs() < bound).all().item<bool>()) << "M=" << M << " N=" << N;
    }
}

// run_tasks' team: every task runs exactly once whatever the threads' timing, worker indices stay below
// `workers` (they index per-thread scratch), a task's exception reaches the caller and the team keeps
// working afterwards, a nested call runs inline, and two callers at once both finish (the second on
// OpenMP's threads).
TEST(Kernels, RunTasksRunsEachTaskOnceOnItsWorkers) {
  for (int64_t workers : {1, 2, 3}) {
    for (int64_t n : {1, 2, 7, 300}) {
      for (int rep = 0; rep < 200; ++rep) {
        std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
        std::atomic<int64_t> worst{0};
        kernels::run_tasks(n, workers, [&](int64_t t, int64_t w) {
          ++runs[static_cast<size_t>(t)];
          int64_t seen = worst.load();
          while (w > seen && !worst.compare_exchange_weak(seen, w)) {
          }
        });
        for (int64_t t = 0; t < n; ++t) ASSERT_EQ(runs[static_cast<size_t>(t)].load(), 1) << "task " << t << " of " << n;
        ASSERT_LT(worst.load(), std::min(workers, n));
      }
    }
  }
  std::atomic<int> ran{0};
  EXPECT_THROW(kernels::run_tasks(50, 2,
                                  [&](int64_t t, int64_t) {
                                    ++ran;
                                    if (t == 3) throw std::runtime_error("task 3");
                                  }),
               std::runtime_error);
  EXPECT_LE(ran.load(), 50);
  std::atomic<int> inner{0};
  kernels::run_tasks(4, 2, [&](int64_t, int64_t) {
    kernels::run_tasks(5, 2, [&](int64_t, int64_t w) {
      EXPECT_EQ(w, 0);  // inline on the task's thread
      ++inner;
    });
  });
  EXPECT_EQ(inner.load(), 20);
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    for (int rep = 0; rep < 300; ++rep) kernels::run_tasks(16, 2, [&](int64_t t, int64_t) { total += t; });
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 300 * (15 * 16 / 2));
}
