// DeepSeek-V3's decode step on raw float32 storage over token rows, each a (sequence, position, token):
// S new tokens per sequence (decode_step_fused: one while generating, a short prompt), or a different
// count per sequence (decode_rows_fused: the server's running rows beside a newcomer's prompt), all
// appended to the latent cache in one pass over the weights (deepseek.h).
//
// A step through ATen is several hundred small operations (each a dispatch, an allocation and a
// shape check: about 6 us here against the ~1 us of arithmetic most of them do at batch 1), so a token
// of `mini` cost 3x the time it takes to read its weights, and a 10-token prompt of `micro` 5 ms. Here
// a step is the same mathematics as the module path (absorbed MLA over the latent cache, the router,
// shared and routed experts) written as products over all token rows at once (the few-row kernels,
// each row computed alone, up to direct_rows_max() rows; sgemm beyond) and the fused kernels' vector loops (RMSNorm, RoPE,
// softmax, SwiGLU) on scratch buffers: no tensor is created but the logits. A linear weight is read in
// float32, as its int8 rows (a w8a8 folder) or as its bfloat16 copy (keep_bf16_weights), whichever the
// model holds for it.
//
// It applies in inference (no grad, eval mode) to a float32, contiguous CPU model and cache in the
// latent-absorbed mode, up to kFusedMaxTokens tokens per row; anything else returns an undefined
// tensor and the caller takes the module path. Rows may carry left padding (key_pad): padded keys are
// hidden from the query as in the module path, and a row's attention starts at its first unpadded
// key. DSFORGE_FUSED=0 (fused.h) turns it off with the other fused kernels.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "dsforge/core/error.h"
#include "dsforge/kernels/fused.h"
#include "dsforge/kernels/platform.h"
#include "dsforge/model/deepseek.h"

namespace dsforge::model {
namespace {

using kernels::gemm_rm;
using kernels::run_tasks;

// A weight matrix [out, in], row-major.
struct Mat {
  const float* w = nullptr;
  int64_t out = 0, in = 0;
  const DeepseekV3Impl::Int8Linear* i8 = nullptr;  // w8a8: its int8 rows (w stays for the absorbed slices)
  const uint16_t* bf = nullptr;                     // bfloat16 weights: its rows (the same layout as w)
};
// The linears' other forms, keyed by their float32 weight: int8 rows (w8a8), bfloat16 copies.
struct Forms {
  const std::unordered_map<const void*, DeepseekV3Impl::Int8Linear>& i8;
  const std::unordered_map<const void*, DeepseekV3Impl::Bf16Linear>& bf;
};
struct Mlp {
  Mat gate, up, down;
};
struct LayerWeights {
  const float *in_norm, *post_norm, *q_a_norm = nullptr, *kv_a_norm;
  Mat q_a, q_b, q, kv_a, kv_b, o;
  bool moe = false;
  Mlp dense, shared;
  bool has_shared = false;
  Mat router;
  const float* router_bias = nullptr;
  std::vector<Mlp> experts;
};

bool usable(const at::Tensor& t) {
  return t.defined() && t.scalar_type() == at::kFloat && t.device().is_cpu() && t.is_contiguous();
}

// Every weight the step reads, or false when one is not float32 contiguous CPU storage.
bool gather(const at::Tensor& t, const float*& p) {
  if (!usable(t)) return false;
  p = t.data_ptr<float>();
  return true;
}
bool gather(const torch::nn::Linear& l, Mat& m, const Forms& f) {
  if (!l || !usable(l->weight)) return false;
  m = {l->weight.data_ptr<float>(), l->weight.size(0), l->weight.size(1)};
  const auto version = static_cast<int64_t>(l->weight._version());
  if (!f.i8.empty())
    if (auto it = f.i8.find(m.w); it != f.i8.end() && it->second.version == version) m.i8 = &it->second;
  if (!f.bf.empty() && !m.i8)
    if (auto it = f.bf.find(m.w); it != f.bf.end() && it->second.version == version)
      m.bf = reinterpret_cast<const uint16_t*>(it->second.w.data_ptr<at::BFloat16>());
  return true;
}
bool gather(const SwiGluMlpImpl& mlp, Mlp& m, const Forms& f) {
  return gather(mlp.gate_proj, m.gate, f) && gather(mlp.up_proj, m.up, f) && gather(mlp.down_proj, m.down, f);
}
bool gather(DecoderLayerImpl& layer, LayerWeights& w, const Forms& f) {
  MlaAttentionImpl& a = *layer.self_attn;
  bool ok = gather(layer.input_layernorm->weight, w.in_norm) && gather(layer.post_attention_layernorm->weight, w.post_norm) &&
            gather(a.kv_a_proj_with_mqa, w.kv_a, f) && gather(a.kv_a_layernorm->weight, w.kv_a_norm) &&
            gather(a.kv_b_proj, w.kv_b, f) && gather(a.o_proj, w.o, f);  // kv_b: read per head (absorbed)
  ok = ok && (a.q_proj ? gather(a.q_proj, w.q, f)
                       : gather(a.q_a_proj, w.q_a, f) && gather(a.q_a_layernorm->weight, w.q_a_norm) &&
                             gather(a.q_b_proj, w.q_b, f));
  if (!ok) return false;
  if (!layer.moe) return gather(*layer.dense_mlp, w.dense, f);
  DeepseekMoeImpl& moe = *layer.moe;
  w.moe = true;
  if (!usable(moe.gate->weight) || !gather(moe.gate->e_score_correction_bias, w.router_bias)) return false;
  w.router = {moe.gate->weight.data_ptr<float>(), moe.gate->weight.size(0), moe.gate->weight.size(1)};
  w.has_shared = static_cast<bool>(moe.shared_experts);
  if (w.has_shared && !gather(*moe.shared_experts, w.shared, f)) return false;
  w.experts.resize(moe.experts->size());
  for (size_t e = 0; e < w.experts.size(); ++e)
    if (!gather(*moe.experts->ptr<SwiGluMlpImpl>(e), w.experts[e], f)) return false;
  return true;
}

// Everything the step reads of the model, or false when a weight is not float32 contiguous CPU storage.
struct StepWeights {
  const float *embed = nullptr, *final_norm = nullptr;
  Mat head;
  std::vector<LayerWeights> layers;
};
bool gather(DeepseekV3BackboneImpl& model, const torch::nn::Linear& lm_head, const Forms& f, StepWeights& w) {
  if (!gather(model.embed_tokens->weight, w.embed) || !gather(model.norm->weight, w.final_norm) || !gather(lm_head, w.head, f))
    return false;
  w.layers.resize(model.main_layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l)
    if (!gather(*model.main_layers[l], w.layers[l], f)) return false;
  return true;
}

// A cache the step can append to: latent-absorbed float32 CPU storage, any padding mask a bool row per sequence.
bool fused_cache(const KvCache& cache) {
  for (const MlaCache& m : cache.layers) {
    if (m.mode != CacheMode::kLatentAbsorbed || !usable(m.kv) || !usable(m.pe)) return false;
    if (m.key_pad.defined() && (m.key_pad.scalar_type() != at::kBool || !m.key_pad.device().is_cpu() ||
                                m.key_pad.stride(1) != 1))
      return false;
  }
  return true;
}

// The most rows the step multiplies with the few-row kernels, which compute each row alone (so a row's
// result does not depend on the rows beside it: a server's folded prompts and running rows): gemm_rm
// takes them up to few_rows_max; beyond that, here, up to four times as many where they are vectorised
// (a folded prompt of 16 tokens beside 16 running rows); sgemm beyond.
int64_t direct_rows_max() {
  const int64_t f = kernels::vector_loops().few_rows_max;
  return f >= 8 ? 4 * f : f;
}

// C[M, N] = A[M, K] B^T (trans_b; B [N, K]) or A B (B [K, N]), + beta C, over the step's rows.
void gemm_rows(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
               float beta, float* C, int64_t ldc) {
  const kernels::VectorLoops& vl = kernels::vector_loops();
  if (vl.few_rows_max >= 8 && M <= direct_rows_max())  // one row too (gemm_rm's sgemv would sum it differently)
    (trans_b ? vl.gemm_nt_f32 : vl.gemm_nn_f32)(M, N, K, A, lda, B, ldb, beta, C, ldc);
  else
    gemm_rm(false, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

// The calibration recorder of the step being run (DeepseekV3Impl::record_input_absmax), or null.
thread_local std::unordered_map<const void*, float>* t_absmax = nullptr;

// Output features [o0, o0 + n) of the product, in whichever form W holds: y[B, o0..o0+n) (leading
// dimension W.out) = x[B, in] W[o0..o0+n)^T, added to y when `accumulate`.
void product(const float* x, const Mat& W, int64_t o0, int64_t n, float* y, int64_t B, bool accumulate) {
  if (W.i8)
    kernels::linear_w8a8(B, n, W.in, x, W.in, W.i8->q.data_ptr<int8_t>() + o0 * W.in, W.i8->scale.data_ptr<float>() + o0,
                         W.i8->sums.data() + o0, y + o0, W.out, accumulate, W.i8->input_scale);
  else if (W.bf)
    kernels::gemm_nt_bf16w(B, n, W.in, x, W.in, W.bf + o0 * W.in, W.in, accumulate ? 1.0f : 0.0f, y + o0, W.out);
  else
    gemm_rows(true, B, n, W.in, x, W.in, W.w + o0 * W.in, W.in, accumulate ? 1.0f : 0.0f, y + o0, W.out);
}

void linear(const float* x, const Mat& W, float* y, int64_t B, bool accumulate = false) {
  if (t_absmax) {
    float m = 0;
    for (int64_t i = 0; i < B * W.in; ++i) m = std::max(m, std::abs(x[i]));
    float& slot = (*t_absmax)[W.w];
    slot = std::max(slot, m);
  }
  product(x, W, 0, W.out, y, B, accumulate);
}

// Output features per thread when W's are split among `workers` (whole 16-feature groups), or 0 where
// they are not split: one worker, a calibration run, or more rows than the few-row kernels take here
// (sgemm blocks by the output count, so a block's outputs need not be the bits of the whole product's;
// the few-row, bf16 and w8a8 kernels compute every output alone).
int64_t split_block(const Mat& W, int64_t B, int64_t workers) {
  if (workers <= 1 || t_absmax || (!W.i8 && !W.bf && B > direct_rows_max())) return 0;
  const int64_t block = (W.out / workers + 15) / 16 * 16;
  return block < W.out ? block : 0;
}

// linear() with W's output features split into `workers` blocks, one per thread: each output is the same
// dot product as in one piece.
void linear_split(const float* x, const Mat& W, float* y, int64_t B, int64_t workers, bool accumulate = false) {
  const int64_t block = split_block(W, B, workers);
  if (block == 0) return linear(x, W, y, B, accumulate);
  run_tasks((W.out + block - 1) / block, workers,
            [&](int64_t t, int64_t) { product(x, W, t * block, std::min(block, W.out - t * block), y, B, accumulate); });
}

// y[B, d] += down(silu(gate(x)) * up(x)) * scale; g, u: scratch of B * width.
void swiglu(const float* x, const Mlp& m, float* y, int64_t B, float* g, float* u, float* tmp, float scale = 1.0f) {
  linear(x, m.gate, g, B);
  linear(x, m.up, u, B);
  kernels::vector_loops().silu_mul_forward_f32(g, u, g, 0, B * m.gate.out);
  if (scale == 1.0f) {
    linear(g, m.down, y, B, /*accumulate=*/true);
    return;
  }
  linear(g, m.down, tmp, B);
  for (int64_t i = 0; i < B * m.down.out; ++i) y[i] += scale * tmp[i];
}

// swiglu() for several rows on `workers` threads: gate and up split by output features (one region),
// then down (another); every output is the dot product it is in one piece, so a row's result does not
// depend on the threads or on the other rows. h += the result.
void swiglu_split(const float* x, const Mlp& m, float* h, int64_t B, float* g, float* u, int64_t workers) {
  const int64_t F = m.gate.out, block = split_block(m.gate, B, workers);
  if (block == 0) {
    swiglu(x, m, h, B, g, u, nullptr);
    return;
  }
  const int64_t blocks = (F + block - 1) / block;
  run_tasks(2 * blocks, workers, [&](int64_t t, int64_t) {  // gate's blocks, then up's
    const int64_t o0 = (t % blocks) * block;
    product(x, t < blocks ? m.gate : m.up, o0, std::min(block, F - o0), t < blocks ? g : u, B, false);
  });
  kernels::vector_loops().silu_mul_forward_f32(g, u, g, 0, B * F);
  linear_split(g, m.down, h, B, workers, /*accumulate=*/true);
}

// A step's buffers, kept on each thread from step to step: grown to the largest step yet and never zeroed
// again (every buffer is written before it is read). Built and zeroed per step, they cost ~40 us of a
// 16-row step of micro (half a megabyte).
template <typename T>
T* grown(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// The router of one token (MoeGateImpl::forward): the K selected experts and their weights. Its scratch
// is the calling thread's (rows are routed on the worker threads).
void route(const ModelConfig& c, const float* logits, const float* bias, int64_t* idx, float* weight) {
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  const bool biased = c.scoring_func == "sigmoid";
  thread_local std::vector<float> scores_buf, choice_buf, gscore_buf;
  thread_local std::vector<int64_t> order_buf;
  float *scores = grown(scores_buf, E), *choice = grown(choice_buf, E);
  if (biased) {
    for (int64_t e = 0; e < E; ++e) {
      scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
      choice[e] = scores[e] + bias[e];
    }
  } else {
    const float m = *std::max_element(logits, logits + E);
    float s = 0;
    for (int64_t e = 0; e < E; ++e) s += scores[e] = std::exp(logits[e] - m);
    for (int64_t e = 0; e < E; ++e) choice[e] = scores[e] /= s;
  }
  if (c.n_group > 1) {  // group-limited routing: experts outside the topk_group best groups are out
    const int64_t G = c.n_group, per = E / G;
    float* gscore = grown(gscore_buf, G);
    for (int64_t g = 0; g < G; ++g) {
      const float* cg = choice + g * per;
      if (biased) {  // V3: the sum of the group's two best biased scores
        float a = -INFINITY, b = -INFINITY;
        for (int64_t j = 0; j < per; ++j) {
          if (cg[j] > a) b = a, a = cg[j];
          else if (cg[j] > b) b = cg[j];
        }
        gscore[static_cast<size_t>(g)] = per >= 2 ? a + b : a;
      } else {
        gscore[static_cast<size_t>(g)] = *std::max_element(cg, cg + per);
      }
    }
    int64_t* order = grown(order_buf, G);
    std::iota(order, order + G, 0);
    std::stable_sort(order, order + G, [&](int64_t a, int64_t b) { return gscore[a] > gscore[b]; });
    for (int64_t i = c.topk_group; i < G; ++i) std::fill(choice + order[i] * per, choice + (order[i] + 1) * per, -INFINITY);
  }
  int64_t* order = grown(order_buf, E);
  std::iota(order, order + E, 0);
  std::partial_sort(order, order + K, order + E, [&](int64_t a, int64_t b) {
    return choice[a] > choice[b] || (choice[a] == choice[b] && a < b);
  });
  float sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    idx[k] = order[k];
    sum += weight[k] = scores[idx[k]];
  }
  const float norm = biased && c.norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
  for (int64_t k = 0; k < K; ++k) weight[k] = weight[k] * norm * static_cast<float>(c.routed_scaling_factor);
}

// The first key a row attends to: its first unpadded position before `pos` (the new token at `pos` is
// never padding), found with memchr over the bool mask (one byte per position).
int64_t first_key(const bool* pad_row, int64_t pos) {
  static_assert(sizeof(bool) == 1, "the padding mask is scanned as bytes");
  const void* hit = std::memchr(pad_row, 0, static_cast<size_t>(pos));
  return hit ? static_cast<const bool*>(hit) - pad_row : pos;
}

// The feed-forward scratch of one step: the router's, and per worker thread the MLP widths.
struct MoeScratch {
  void size_for(const ModelConfig& c, int64_t B, int64_t w, int64_t wd) {
    E = c.n_routed_experts, K = c.num_experts_per_tok, d = c.hidden_size, width = wd, workers = w, rows = B;
    grown(logits, B * std::max<int64_t>(E, 1));
    grown(weight, B * std::max<int64_t>(K, 1));
    grown(idx, B * std::max<int64_t>(K, 1));
    if (static_cast<int64_t>(by_expert.size()) < E) by_expert.resize(static_cast<size_t>(E));
    grown(xg, B * K * d);
    grown(yg, B * K * d);
    grown(shared, B * d);
    grown(g, workers * B * width);
    grown(u, workers * B * width);
    grown(tmp, workers * B * d);
  }
  int64_t E = 0, K = 0, d = 0, width = 0, workers = 1, rows = 0;
  std::vector<float> logits, weight;  // the router's logits; each row's K expert weights
  std::vector<int64_t> idx;           // each row's K experts
  std::vector<std::vector<std::pair<int64_t, float>>> by_expert;  // (row, weight) per expert
  std::vector<float> xg, yg;    // the rows of every expert, grouped by expert, and their outputs
  std::vector<float> shared;    // the shared experts' output (several rows)
  std::vector<float> g, u, tmp;  // per worker: B rows of the MLP width (g, u) and of d (tmp)
  float* g_of(int64_t w) { return g.data() + w * rows * width; }
  float* u_of(int64_t w) { return u.data() + w * rows * width; }
  float* tmp_of(int64_t w) { return tmp.data() + w * rows * d; }
};

struct StepScratch {
  std::vector<float> h, x, rs, qa, q, kv, qpe, qabs, sc, lat, o;
  MoeScratch ffn;
};

// h[B, d] += the shared experts (if any) and the routed experts of x (router with its correction bias,
// top-k, weights). One row runs its experts directly; several rows are grouped by expert, so each
// expert's weights are read once per step, and the experts (the shared ones first, then the busiest)
// run on the worker threads, each into its own rows of yg. Their outputs are added to h afterwards on
// this thread, in expert order: the same sums for any number of threads.
void feed_forward_moe(const ModelConfig& c, const LayerWeights& w, const float* x, float* h, int64_t B, MoeScratch& s) {
  const int64_t E = s.E, K = s.K, d = s.d;
  linear(x, w.router, s.logits.data(), B);
  if (B == 1) {
    if (w.has_shared) swiglu(x, w.shared, h, 1, s.g_of(0), s.u_of(0), s.tmp_of(0));
    route(c, s.logits.data(), w.router_bias, s.idx.data(), s.weight.data());
    // In expert order, as the grouped rows below add them: a row's sums do not depend on the batch.
    std::vector<int64_t> order(static_cast<size_t>(K));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s.idx[a] < s.idx[b]; });
    for (int64_t k : order)
      swiglu(x, w.experts[static_cast<size_t>(s.idx[static_cast<size_t>(k)])], h, 1, s.g_of(0), s.u_of(0), s.tmp_of(0),
             s.weight[k]);
    return;
  }
  for (int64_t e = 0; e < E; ++e) s.by_expert[static_cast<size_t>(e)].clear();
  // Each row's experts (on the worker threads from 8 rows), then the rows grouped by expert in row order.
  auto route_row = [&](int64_t b, int64_t) { route(c, &s.logits[b * E], w.router_bias, &s.idx[b * K], &s.weight[b * K]); };
  if (B >= 8)
    run_tasks(B, s.workers, route_row);
  else
    for (int64_t b = 0; b < B; ++b) route_row(b, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = b * K; k < (b + 1) * K; ++k)
      s.by_expert[static_cast<size_t>(s.idx[static_cast<size_t>(k)])].push_back({b, s.weight[static_cast<size_t>(k)]});
  // Tasks: -1 = the shared experts, then the experts with rows, busiest first; offsets into xg/yg.
  std::vector<int64_t> tasks, offset(static_cast<size_t>(E) + 1, 0);
  if (w.has_shared) tasks.push_back(-1);
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = static_cast<int64_t>(s.by_expert[static_cast<size_t>(e)].size());
    offset[static_cast<size_t>(e) + 1] = offset[static_cast<size_t>(e)] + n;
    if (n > 0) active.push_back(e);
  }
  std::stable_sort(active.begin(), active.end(), [&](int64_t a, int64_t b) {
    return s.by_expert[static_cast<size_t>(a)].size() > s.by_expert[static_cast<size_t>(b)].size();
  });
  tasks.insert(tasks.end(), active.begin(), active.end());
  run_tasks(static_cast<int64_t>(tasks.size()), s.workers, [&](int64_t t, int64_t worker) {
    const int64_t e = tasks[static_cast<size_t>(t)];
    float *g = s.g_of(worker), *u = s.u_of(worker), *tmp = s.tmp_of(worker);
    if (e < 0) {
      std::fill(s.shared.begin(), s.shared.begin() + B * d, 0.0f);
      swiglu(x, w.shared, s.shared.data(), B, g, u, tmp);
      return;
    }
    const auto& rows = s.by_expert[static_cast<size_t>(e)];
    const int64_t n = static_cast<int64_t>(rows.size());
    float *xe = &s.xg[offset[static_cast<size_t>(e)] * d], *ye = &s.yg[offset[static_cast<size_t>(e)] * d];
    for (int64_t i = 0; i < n; ++i) std::memcpy(&xe[i * d], &x[rows[static_cast<size_t>(i)].first * d], sizeof(float) * d);
    std::fill(ye, ye + n * d, 0.0f);
    swiglu(xe, w.experts[static_cast<size_t>(e)], ye, n, g, u, tmp);
  });
  if (w.has_shared)
    for (int64_t i = 0; i < B * d; ++i) h[i] += s.shared[static_cast<size_t>(i)];
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = s.by_expert[static_cast<size_t>(e)];
    const float* ye = &s.yg[offset[static_cast<size_t>(e)] * d];
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto [b, weight] = rows[i];
      for (int64_t j = 0; j < d; ++j) h[b * d + j] += weight * ye[static_cast<int64_t>(i) * d + j];
    }
  }
}

}  // namespace

at::Tensor DeepseekV3Impl::decode_step_fused(const at::Tensor& tokens, KvCache& cache) {
  if (tokens.dim() != 2 || tokens.size(1) < 1 || tokens.size(1) > kFusedMaxTokens) return {};
  // Token rows: row i is token s = i % S of sequence b = i / S, at position pos + s; every row's logits.
  const int64_t Bs = tokens.size(0), S = tokens.size(1), B = Bs * S, pos = cache.len;
  const at::Tensor tok = tokens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* tp = tok.data_ptr<int64_t>();
  std::vector<FusedRow> rows(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) rows[static_cast<size_t>(i)] = {i / S, pos + i % S, tp[i], true};
  at::Tensor logits = fused_rows(rows, cache, pos + S);
  return logits.defined() ? logits.view({Bs, S, logits.size(-1)}) : logits;
}

at::Tensor DeepseekV3Impl::decode_rows_fused(const std::vector<int64_t>& seqs, const std::vector<std::vector<int64_t>>& tokens,
                                             KvCache& cache) {
  // Sequence seqs[j]'s tokens end at position cache.len; the logits of its last token only.
  const int64_t pos = cache.len;
  std::vector<FusedRow> rows;
  for (size_t j = 0; j < seqs.size(); ++j) {
    const auto n = static_cast<int64_t>(tokens[j].size());
    if (n < 1 || n > kFusedMaxTokens || n > pos + 1) return {};
    for (int64_t s = 0; s < n; ++s) rows.push_back({seqs[j], pos - n + 1 + s, tokens[j][static_cast<size_t>(s)], s == n - 1});
  }
  return fused_rows(rows, cache, pos + 1);
}

int64_t DeepseekV3Impl::decode_rows_batch_tokens() const { return std::min(kFusedMaxTokens, direct_rows_max()); }

at::Tensor DeepseekV3Impl::fused_rows(const std::vector<FusedRow>& rows, KvCache& cache, int64_t new_len) {
  if (!kernels::fused_enabled() || is_training() || at::GradMode::is_enabled() || rows.empty() ||
      cache.layers.size() != model->main_layers.size())
    return {};
  const int64_t B = static_cast<int64_t>(rows.size()), T = new_len, L = c_.num_hidden_layers;
  if (!fused_cache(cache)) return {};
  const int64_t seqs = cache.layers.front().kv.size(0);
  for (const FusedRow& r : rows)
    if (r.seq < 0 || r.seq >= seqs || r.pos < 0 || r.pos >= T)
      throw Error(fmt("model: a decode row of sequence ", r.seq, " at position ", r.pos, " is outside the cache's ", seqs,
                      " sequences or before position ", T));
  StepWeights sw;
  if (!gather(*model, lm_head, Forms{int8_linears, bf16_linears}, sw)) return {};
  const std::vector<LayerWeights>& W = sw.layers;
  const float *embed = sw.embed, *final_norm = sw.final_norm;
  const Mat& head = sw.head;
  if (T > cache.max_len) throw Error(fmt("model: KV cache holds ", cache.max_len, " positions; ", T, " requested"));
  struct Recorder {  // the step's linears report to record_input_absmax while it runs
    explicit Recorder(std::unordered_map<const void*, float>* r) { t_absmax = r; }
    ~Recorder() { t_absmax = nullptr; }
  } recorder(record_input_absmax);
  if (T > c_.max_position_embeddings)
    throw Error(fmt("model: position ", T, " exceeds max_position_embeddings ", c_.max_position_embeddings));

  const int64_t d = c_.hidden_size, H = c_.num_attention_heads, dn = c_.qk_nope_head_dim, dr = c_.qk_rope_head_dim,
                dv = c_.v_head_dim, dc = c_.kv_lora_rank, dqk = dn + dr, V = c_.vocab_size;
  const float eps = static_cast<float>(c_.rms_norm_eps), scale = static_cast<float>(rope_.softmax_scale);
  const int64_t width = std::max({c_.intermediate_size, c_.moe_intermediate_size * std::max<int64_t>(1, c_.n_shared_experts),
                                  c_.moe_intermediate_size});
  const kernels::VectorLoops& vl = kernels::vector_loops();
  // Several rows share the step among the worker threads (experts, attention rows, the output head);
  // one row's step is a few hundred small products, faster on this thread alone. A calibration run
  // (record_input_absmax) stays on this thread, which holds the recorder.
  const int64_t workers = B > 1 && !record_input_absmax ? std::max<int64_t>(1, at::get_num_threads()) : 1;
  const float *cosp = rope_.cos.data_ptr<float>(), *sinp = rope_.sin.data_ptr<float>();
  // From 8 rows the attention's products (projections split by output features, W_UK and W_UV by
  // head) are shared among the threads too: at 16 rows they were a fifth of the step's arithmetic on
  // this thread alone, and sharing them measured the step 25% faster (float32 and bf16 weights alike).
  const int64_t pw = B >= 8 ? workers : 1;

  // Scratch: the residual stream h, the normed x, the projections, one row's attention, the MLP widths.
  thread_local StepScratch scratch;
  float *h = grown(scratch.h, B * d), *x = grown(scratch.x, B * d), *rs = grown(scratch.rs, std::max<int64_t>(B, 1)),
        *qa = grown(scratch.qa, B * std::max<int64_t>(c_.q_lora_rank, 1)), *q = grown(scratch.q, B * H * dqk),
        *kv = grown(scratch.kv, B * (dc + dr)), *qpe = grown(scratch.qpe, B * H * dr), *qabs = grown(scratch.qabs, B * H * dc),
        *sc = grown(scratch.sc, workers * H * T), *lat = grown(scratch.lat, B * H * dc), *o = grown(scratch.o, B * H * dv);
  MoeScratch& ffn = scratch.ffn;
  ffn.size_for(c_, B, workers, width);

  for (int64_t i = 0; i < B; ++i) {
    const int64_t id = rows[static_cast<size_t>(i)].token;
    if (id < 0 || id >= V) throw Error(fmt("model: token id ", id, " outside the vocabulary of ", V));
    std::memcpy(&h[i * d], embed + id * d, sizeof(float) * d);
  }
  // RoPE over one vector of d_r (the shared key) and over the H query heads' rope parts.
  kernels::RopeRows rope_key, rope_heads;
  rope_key.rows = 1, rope_key.d = dr, rope_key.n_dims = 2, rope_key.sizes[0] = rope_key.sizes[1] = 1;
  rope_heads.rows = H, rope_heads.d = dr, rope_heads.n_dims = 3, rope_heads.sizes[0] = rope_heads.sizes[1] = 1;
  rope_heads.sizes[2] = H, rope_heads.strides[2] = dqk;

  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights& w = W[static_cast<size_t>(l)];
    MlaCache& mc = cache.layers[static_cast<size_t>(l)];
    float *ckv = mc.kv.data_ptr<float>(), *cpe = mc.pe.data_ptr<float>();
    const int64_t kv_row = mc.kv.stride(0), pe_row = mc.pe.stride(0);
    const bool* pad = mc.key_pad.defined() ? mc.key_pad.data_ptr<bool>() : nullptr;

    // ---- attention: projections for all rows at once
    vl.rms_norm_rows_f32(h, w.in_norm, x, rs, d, eps, 0, B);
    if (w.q.w) {
      linear_split(x, w.q, q, B, pw);
    } else {
      linear_split(x, w.q_a, qa, B, pw);
      vl.rms_norm_rows_f32(qa, w.q_a_norm, qa, rs, w.q_a.out, eps, 0, B);
      linear_split(qa, w.q_b, q, B, pw);
    }
    linear_split(x, w.kv_a, kv, B, pw);
    // ---- in one region: q_abs[b, h] = q_nope[b, h] W_UK[h] (d_n -> d_c), a task per head (one product
    // over all rows; one product per row measured slower), then a task per row: its new latent and rope
    // key into its sequence's cache, its queries' rope parts. Heads and rows are shared among the threads
    // from 8 rows.
    run_tasks(H + B, pw, [&](int64_t t, int64_t) {
      if (t < H) {
        gemm_rows(false, B, dc, dn, q + t * dqk, H * dqk, w.kv_b.w + t * (dn + dv) * dc, dc, 0.0f, &qabs[t * dc], H * dc);
        return;
      }
      const int64_t i = t - H, b = rows[static_cast<size_t>(i)].seq, p = rows[static_cast<size_t>(i)].pos;
      const float* kvb = kv + i * (dc + dr);
      vl.rms_norm_rows_f32(kvb, w.kv_a_norm, ckv + b * kv_row + p * dc, rs + i, dc, eps, 0, 1);     // c_kv
      vl.rope_rows_f32(rope_key, kvb + dc, cpe + b * pe_row + p * dr, cosp, sinp, p, 1.0f, 0, 1);  // k_pe
      vl.rope_rows_f32(rope_heads, q + i * H * dqk + dn, &qpe[i * H * dr], cosp, sinp, p, 1.0f, 0, H);
    });
    // ---- each row attends over its own cached latents, from its first unpadded position: a row that
    // joined a long-running batch (the server's cohorts) pays for its own tokens, not the batch's age
    // (a token of a multi-token step also sees the step's earlier tokens, already in the cache)
    run_tasks(B, workers, [&](int64_t i, int64_t worker) {
      float* sc_w = &sc[worker * H * T];
      const int64_t b = rows[static_cast<size_t>(i)].seq, p = rows[static_cast<size_t>(i)].pos;
      const bool* pr = pad ? pad + b * mc.key_pad.stride(0) : nullptr;
      const int64_t lo = pr ? first_key(pr, p) : 0, n = p + 1 - lo;
      const float *cb = ckv + b * kv_row + lo * dc, *pb = cpe + b * pe_row + lo * dr;
      gemm_rm(false, true, H, n, dc, &qabs[i * H * dc], dc, cb, dc, 0.0f, sc_w, n);  // q_abs . c_t
      gemm_rm(false, true, H, n, dr, &qpe[i * H * dr], dr, pb, dr, 1.0f, sc_w, n);   // + q_pe . k_pe_t
      if (pr)  // padding after the first real key (none from the engine or generate; kept for any mask)
        for (int64_t t = lo; t < p; ++t)
          if (pr[t])
            for (int64_t hh = 0; hh < H; ++hh) sc_w[hh * n + t - lo] = -INFINITY;
      for (int64_t hh = 0; hh < H; ++hh) vl.softmax_row_f32(&sc_w[hh * n], &sc_w[hh * n], n, n, scale);
      gemm_rm(false, false, H, dc, n, sc_w, n, cb, dc, 0.0f, &lat[i * H * dc], dc);  // attend over latents
    });
    // ---- o[b, h] = lat[b, h] W_UV[h]^T (d_c -> d_v): one product per head over all rows; W_UV[h] is a
    // block of kv_b's rows, so a w8a8 model multiplies its int8 rows and bf16 weights their bfloat16 rows
    // (W_UK[h] is read by columns above: float32)
    run_tasks(H, pw, [&](int64_t hh, int64_t) {
      const int64_t row0 = hh * (dn + dv) + dn;
      if (const auto* q8 = w.kv_b.i8)
        kernels::linear_w8a8(B, dv, dc, &lat[hh * dc], H * dc, q8->q.data_ptr<int8_t>() + row0 * dc,
                             q8->scale.data_ptr<float>() + row0, q8->sums.data() + row0, &o[hh * dv], H * dv);
      else if (w.kv_b.bf)
        kernels::gemm_nt_bf16w(B, dv, dc, &lat[hh * dc], H * dc, w.kv_b.bf + row0 * dc, dc, 0.0f, &o[hh * dv], H * dv);
      else
        gemm_rows(true, B, dv, dc, &lat[hh * dc], H * dc, w.kv_b.w + row0 * dc, dc, 0.0f, &o[hh * dv], H * dv);
    });
    linear_split(o, w.o, h, B, pw, /*accumulate=*/true);  // h += o W_o^T

    // ---- feed-forward
    vl.rms_norm_rows_f32(h, w.post_norm, x, rs, d, eps, 0, B);
    if (w.moe)
      feed_forward_moe(c_, w, x, h, B, ffn);
    else
      swiglu_split(x, w.dense, h, B, ffn.g_of(0), ffn.u_of(0), workers);
  }
  // The head over the rows whose logits are asked for, gathered first (a prompt's last token).
  int64_t n_out = 0;
  for (int64_t i = 0; i < B; ++i)
    if (rows[static_cast<size_t>(i)].logits) {
      if (n_out != i) std::memcpy(&h[n_out * d], &h[i * d], sizeof(float) * d);
      ++n_out;
    }
  vl.rms_norm_rows_f32(h, final_norm, x, rs, d, eps, 0, n_out);
  at::Tensor logits = at::empty({n_out, V}, at::kFloat);
  linear_split(x, head, logits.data_ptr<float>(), n_out, n_out > 1 ? workers : 1);
  cache.len = T;
  return logits;
}

}  // namespace dsforge::model
