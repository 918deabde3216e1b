// The decode path's building blocks against what they replaced, in one process, one thread (but 3.):
//   1. the few-row products (kernels/few_rows.inc) against OpenBLAS sgemm_ on the same operands, with
//      the weights hot (one matrix again and again) and cold (a 39 MB set of expert matrices);
//   2. sample_token against the definition it implements (sort the vocabulary, invert the CDF), with the
//      share of draws where both pick the same token;
//   3. micro's fused step at 1 / 4 / 16 rows (one thread, then two), and a 10-token prompt through the
//      fused step against the module path (DeepseekV3Impl::hidden + the head, what forward_cached ran
//      before).
//   4. the int8 products (kernels/int8_rows.inc): a w8a8 linear layer (activation quantisation, the
//      int32 product, the scales) against the float32 few-row product on the same cold expert set,
//      and the raw products per form (vpdpbusd, bytes widened to int16).
// Every section prints its peak RSS.
//
//   ./build/bench_decode [--steps]      (--steps: section 3 alone)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../tests/reference/sampling.h"
#include "bench_util.h"
#include "dsforge/kernels/platform.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/generate.h"

// The system BLAS, where the build links one (weak: absent, the product section says so).
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc) __attribute__((weak));

using namespace dsforge;
using namespace dsforge::bench;

namespace {

// Row-major C[M, N] = A[M, K] op(B) through sgemm_ directly (column-major: C^T = op(B)^T A^T).
void blas_product(bool nt, int M, int N, int K, const float* A, const float* B, float* C) {
  const float one = 1, zero = 0;
  const char ta = nt ? 'T' : 'N', tb = 'N';
  const int ldb = nt ? K : N;
  sgemm_(&ta, &tb, &N, &M, &K, &one, B, &ldb, A, &K, &zero, C, &N);
}

template <typename F>
double micros_per_call(F&& f, int reps) {
  f();  // warm-up
  return seconds([&] {
           for (int r = 0; r < reps; ++r) f();
         }) /
         reps * 1e6;
}

void products() {
  const kernels::VectorLoops& vl = kernels::vector_loops();
  std::printf("== few-row products (%s) against OpenBLAS sgemm_, one thread, us per call\n", vl.isa);
  if (!sgemm_) {
    std::printf("(no BLAS linked: nothing to compare with)\n");
    return;
  }
  std::printf("| product | N x K | rows | sgemm_ us | dsforge us | sgemm_ / dsforge | max abs diff |\n|---|---|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  reset_peak_rss();
  struct Shape {
    bool nt;
    int N, K;
  };
  for (const Shape s : {Shape{true, 512, 128}, {true, 96, 256}, {true, 256, 96}, {true, 2048, 256}, {false, 64, 150}, {false, 64, 32}}) {
    std::vector<float> W(static_cast<size_t>(s.N) * s.K), X(16 * static_cast<size_t>(s.K)), ref(16 * static_cast<size_t>(s.N)),
        ours(ref.size());
    for (auto& v : W) v = normal(rng);
    for (auto& v : X) v = normal(rng);
    for (int M : {1, 2, 4, 8, 16}) {
      const int reps = std::max(200, 20000000 / (M * s.N * s.K));
      const double b = micros_per_call([&] { blas_product(s.nt, M, s.N, s.K, X.data(), W.data(), ref.data()); }, reps);
      const double o = micros_per_call(
          [&] { (s.nt ? vl.gemm_nt_f32 : vl.gemm_nn_f32)(M, s.N, s.K, X.data(), s.K, W.data(), s.nt ? s.K : s.N, 0.0f, ours.data(), s.N); },
          reps);
      double diff = 0;
      for (int i = 0; i < M * s.N; ++i) diff = std::max(diff, static_cast<double>(std::fabs(ref[i] - ours[i])));
      std::printf("| %s | %d x %d | %d | %.2f | %.2f | %.2fx | %.1e |\n", s.nt ? "A B^T" : "A B", s.N, s.K, M, b, o, b / o, diff);
    }
  }
  // Cold: 400 expert-sized matrices (96 x 256, 39 MB), each read once per pass, as a batched step reads
  // every routed expert of every layer.
  const int N = 96, K = 256, copies = 400;
  std::vector<float> W(static_cast<size_t>(N) * K * copies, 0.01f), X(16 * K, 1.0f), Y(16 * N);
  std::printf("\ncold weights (%d matrices of %d x %d, %.0f MB), us per matrix and GB/s of weights read:\n", copies, N, K,
              W.size() * 4.0 / 1e6);
  std::printf("| rows | sgemm_ us | GB/s | dsforge us | GB/s | sgemm_ / dsforge |\n|---:|---:|---:|---:|---:|---:|\n");
  for (int M : {1, 2, 4, 8, 16}) {
    auto pass = [&](bool blas) {
      for (int c = 0; c < copies; ++c) {
        const float* w = W.data() + static_cast<size_t>(c) * N * K;
        if (blas) blas_product(true, M, N, K, X.data(), w, Y.data());
        else vl.gemm_nt_f32(M, N, K, X.data(), K, w, K, 0.0f, Y.data(), N);
      }
    };
    const double b = micros_per_call([&] { pass(true); }, 3) / copies, o = micros_per_call([&] { pass(false); }, 3) / copies;
    const double bytes = N * K * 4.0;
    std::printf("| %d | %.2f | %.1f | %.2f | %.1f | %.2fx |\n", M, b, bytes / b / 1e3, o, bytes / o / 1e3, b / o);
  }
  std::printf("peak RSS %.0f MB\n", peak_rss_mb());
}


void sampling() {
  std::printf("\n== sampling one row of V = 2048 logits (N(0, 3)), us per row, 2000 draws\n");
  std::printf("| temperature | top_p | top_k | sort (definition) | sample_token | sort / sample_token | same token |\n|---:|---:|---:|---:|---:|---:|---:|\n");
  reset_peak_rss();
  std::mt19937 rng(2);
  std::normal_distribution<double> normal(0.0, 3.0);
  std::vector<double> logits(2048);
  for (double& v : logits) v = normal(rng);
  const at::Tensor t = at::tensor(logits, at::kDouble);
  struct Setting {
    double temperature, top_p;
    int64_t top_k;
  };
  for (const Setting s : {Setting{0.8, 1.0, 0}, {0.8, 0.9, 0}, {0.8, 0.9, 40}, {1.0, 0.5, 0}}) {
    model::SampleOptions o;
    o.temperature = s.temperature;
    o.top_p = s.top_p;
    o.top_k = s.top_k;
    const int draws = 2000;
    std::vector<int64_t> a(draws), b(draws);
    const double ts = seconds([&] {
                        for (int i = 0; i < draws; ++i) a[i] = reference::sample_by_sorting(logits, o, (i + 0.5) / draws);
                      }) / draws * 1e6;
    const double tq = seconds([&] {
                        for (int i = 0; i < draws; ++i) b[i] = model::sample_token(t, {}, o, (i + 0.5) / draws);
                      }) / draws * 1e6;
    int same = 0;
    for (int i = 0; i < draws; ++i) same += a[i] == b[i];
    std::printf("| %.1f | %.1f | %lld | %.1f | %.1f | %.2fx | %d / %d |\n", s.temperature, s.top_p, static_cast<long long>(s.top_k), ts,
                tq, ts / tq, same, draws);
  }
  std::printf("peak RSS %.0f MB\n", peak_rss_mb());
}

void model_steps() {
  using namespace dsforge::model;
  std::printf("\n== micro (random weights, float32): the fused step and a prompt through it\n");
  reset_peak_rss();
  const ModelConfig c = model_config_from_preset("micro");
  DeepseekV3 m(c);
  init_weights(*m, 0.02, 1);
  m->eval();
  m->pack_weights();  // on huge pages, as serve and generate hold them
  at::NoGradGuard no_grad;
  // A 16-token prompt, then 64 single-token steps, 20 times; several rows share the step among the
  // threads (one thread, then two where the machine has them).
  const int most = static_cast<int>(std::min<unsigned>(std::max(1u, std::thread::hardware_concurrency()), 2));
  // Then the same with bfloat16 decode weights (serve --weights bf16).
  for (const std::string form : {"float32", "bf16"})
  for (int threads = 1; threads <= most; ++threads)
  for (int64_t B : {1, 4, 16}) {
    if (form == "bf16" && m->bf16_linears.empty()) m->keep_bf16_weights();
    at::set_num_threads(threads);
    double total = 0;
    for (int r = 0; r < 20; ++r) {
      KvCache cache = m->make_cache(B, 128);
      m->forward_cached(at::randint(c.vocab_size, {B, 16}, at::kLong), cache);
      const at::Tensor tok = at::randint(c.vocab_size, {B, 1}, at::kLong);
      total += seconds([&] {
        for (int i = 0; i < 64; ++i) m->forward_cached(tok, cache);
      });
    }
    const double step = total / (20 * 64);
    std::printf("step of %2lld rows, %d thread(s), %s weights: %.3f ms (%.0f tokens/s)\n", static_cast<long long>(B), threads,
                form.c_str(), step * 1e3, B / step);
  }
  m->bf16_linears.clear();
  at::set_num_threads(1);
  // A 10-token prompt after 118 cached positions (a server newcomer's prefill).
  double fused = 0, modules = 0;
  const int reps = 30;
  for (int r = 0; r < reps; ++r) {
    const at::Tensor prompt = at::randint(c.vocab_size, {1, 10}, at::kLong);
    KvCache a = m->make_cache(1, 256), b = m->make_cache(1, 256);
    a.len = b.len = 118;
    fused += seconds([&] { m->decode_step_fused(prompt, a); });
    modules += seconds([&] {
      at::Tensor h = m->hidden(prompt, b.len, &b);
      b.len += 10;
      m->logits_from_hidden(h);
    });
  }
  std::printf("10-token prompt: module path %.2f ms, fused %.2f ms (%.2fx)\n", modules / reps * 1e3, fused / reps * 1e3,
              modules / fused);
  std::printf("peak RSS %.0f MB\n", peak_rss_mb());
}

void int8_products() {
  const kernels::VectorLoops& vl = kernels::vector_loops();
  std::printf("\n== int8 products (%s) against the float32 few-row product, one thread\n", kernels::int8_kernel().c_str());
  // The cold expert set of section 1 (400 matrices of 96 x 256) as int8 with per-row scales: a quarter of the bytes.
  const int N = 96, K = 256, copies = 400;
  std::mt19937 rng(7);
  std::vector<float> W(static_cast<size_t>(N) * K * copies), X(16 * K), Y(16 * N), scale(static_cast<size_t>(N) * copies, 0.01f);
  std::vector<int8_t> Q(W.size());
  for (size_t i = 0; i < W.size(); ++i) {
    Q[i] = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    W[i] = 0.01f * Q[i];
  }
  for (auto& x : X) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<int32_t> sums(static_cast<size_t>(N) * copies);
  for (int c = 0; c < copies; ++c)
    kernels::int8_row_sums(Q.data() + static_cast<size_t>(c) * N * K, N, K, sums.data() + static_cast<size_t>(c) * N);
  std::printf("cold weights (%d matrices of %d x %d: float32 %.0f MB, int8 %.0f MB), us per matrix:\n", copies, N, K,
              W.size() * 4.0 / 1e6, Q.size() / 1e6);
  std::printf("| rows | float32 us | w8a8 us | float32 / w8a8 | max rel diff |\n|---:|---:|---:|---:|---:|\n");
  for (int M : {1, 2, 4, 8, 16}) {
    std::vector<float> Yf(static_cast<size_t>(M) * N), Yq(static_cast<size_t>(M) * N);
    auto pass = [&](bool int8) {
      for (int c = 0; c < copies; ++c) {
        const size_t off = static_cast<size_t>(c) * N * K;
        if (int8)
          kernels::linear_w8a8(M, N, K, X.data(), K, Q.data() + off, scale.data() + c * N, sums.data() + c * N, Yq.data(), N);
        else vl.gemm_nt_f32(M, N, K, X.data(), K, W.data() + off, K, 0.0f, Yf.data(), N);
      }
    };
    const double f = micros_per_call([&] { pass(false); }, 3) / copies, q = micros_per_call([&] { pass(true); }, 3) / copies;
    double diff = 0, ref = 0;  // of the last matrix: activation rounding only (the weights are exactly int8 x 0.01)
    for (size_t i = 0; i < Yf.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(Yf[i] - Yq[i])));
      ref = std::max(ref, static_cast<double>(std::fabs(Yf[i])));
    }
    std::printf("| %d | %.2f | %.2f | %.2fx | %.1e |\n", M, f, q, f / q, diff / ref);
  }
  // The raw int32 products of every form this CPU runs, hot (2048 x 1024, 2 MB int8).
  const int HN = 2048, HK = 1024;
  std::vector<int8_t> HB(static_cast<size_t>(HN) * HK, 3);
  std::vector<uint8_t> HA(16 * HK, 200);
  std::vector<int32_t> HC(16 * HN);
  std::vector<std::pair<std::string, decltype(kernels::VectorLoops::gemm_u8s8_nt)>> forms;
  for (const std::string& isa : kernels::supported_vector_isas()) {
    const kernels::VectorLoops& t = isa == "avx512" ? kernels::vector_loops_avx512()
                                    : isa == "avx2" ? kernels::vector_loops_avx2()
                                                    : kernels::vector_loops_generic();
    if (t.gemm_u8s8_nt_vnni && __builtin_cpu_supports("avx512vnni")) forms.push_back({isa + "-vnni", t.gemm_u8s8_nt_vnni});
    forms.push_back({isa, t.gemm_u8s8_nt});
  }
  std::printf("\nraw u8 x s8 -> int32 products, %d x %d weights (hot), GOP/s (2 ops per multiply-add):\n", HN, HK);
  std::printf("| form | 1 row | 4 rows | 16 rows |\n|---|---:|---:|---:|\n");
  for (const auto& [name, fn] : forms) {
    std::printf("| %s", name.c_str());
    for (int M : {1, 4, 16}) {
      const double us = micros_per_call([&] { fn(M, HN, HK, HA.data(), HK, HB.data(), HK, HC.data(), HN); }, 20);
      std::printf(" | %.1f", 2.0 * M * HN * HK / us / 1e3);
    }
    std::printf(" |\n");
  }
  std::printf("peak RSS %.0f MB\n", peak_rss_mb());
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
  const bool steps_only = argc > 1 && std::string(argv[1]) == "--steps";
  if (!steps_only) products(), sampling();
  model_steps();
  if (!steps_only) int8_products();
  return 0;
}
