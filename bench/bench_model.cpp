// Model benchmark: forward+backward tokens/s (nano, micro) and decode tokens/s at 1024 cached
// tokens (micro) with the absorbed latent cache against the official naive cache (per-head K/V),
// in one process, printing ratios and per-phase peak RSS.
//
//   ./build/bench_model [--threads N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "bench_util.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/info.h"

using namespace dsforge;
using namespace dsforge::model;
using namespace dsforge::bench;

namespace {

struct Result {
  double tokens_per_s;
  double peak_mb;
};

Result train_step_throughput(const char* preset, int64_t batch, int64_t seq, int steps) {
  ModelConfig c = model_config_from_preset(preset);
  DeepseekV3 m(c);
  init_weights(*m, 0.02, 0);
  m->train();
  auto gen = at::detail::createCPUGenerator(1);
  at::Tensor tokens = at::randint(c.vocab_size, {batch, seq + 1 + c.num_nextn_predict_layers}, gen, at::kLong);
  auto step = [&]() {
    for (auto& p : m->parameters()) p.mutable_grad() = at::Tensor();
    m->loss(tokens, 0.3).total.backward();
  };
  step();  // warm-up
  reset_peak_rss();
  double t = seconds([&]() {
    for (int i = 0; i < steps; ++i) step();
  });
  return {static_cast<double>(batch * seq * steps) / t, peak_rss_mb()};
}

Result decode_throughput(DeepseekV3& m, CacheMode mode, int64_t batch, int64_t cached, int64_t new_tokens,
                         int64_t* cache_bytes) {
  at::NoGradGuard ng;
  m->eval();
  const int64_t V = m->config().vocab_size;
  auto gen = at::detail::createCPUGenerator(2);
  at::Tensor prompt = at::randint(V, {batch, cached}, gen, at::kLong);
  KvCache cache = m->make_cache(batch, cached + new_tokens, mode);
  *cache_bytes = cache.bytes();
  m->forward_cached(prompt, cache);  // prefill
  at::Tensor next = at::zeros({batch, 1}, at::kLong);
  reset_peak_rss();
  double t = seconds([&]() {
    for (int64_t i = 0; i < new_tokens; ++i) next = m->forward_cached(next, cache).argmax(-1);
  });
  return {static_cast<double>(batch * new_tokens) / t, peak_rss_mb()};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[i + 1]);
  at::set_num_threads(threads);
  at::globalContext().setFlushDenormal(true);
  std::printf("bench_model: %d threads, float32\n\n", threads);

  std::printf("forward+backward (loss with MTP), batch 8:\n");
  for (auto [preset, seq] : {std::pair<const char*, int64_t>{"nano", 128}, {"micro", 256}}) {
    Result r = train_step_throughput(preset, 8, seq, preset == std::string("nano") ? 10 : 4);
    ModelInfo info = model_info(model_config_from_preset(preset), seq);
    std::printf("  %-6s S=%-4lld %9.0f tokens/s  %6.2f GFLOP/s (model FLOPs incl. MTP, fwd+bwd)  peak RSS %7.1f MB\n",
                preset, static_cast<long long>(seq), r.tokens_per_s,
                r.tokens_per_s * info.train_flops_per_token / 1e9, r.peak_mb);
  }

  DeepseekV3 micro(model_config_from_preset("micro"));
  init_weights(*micro, 0.02, 0);
  double ratio_b1 = 0, ratio_bmax = 0, size_ratio = 0;
  for (int64_t batch : {1, 4, 16}) {
    std::printf("\ndecode on micro, batch %lld, 1024 cached tokens, 32 new tokens per sequence:\n", static_cast<long long>(batch));
    int64_t naive_bytes = 0, expanded_bytes = 0, absorbed_bytes = 0;
    Result naive = decode_throughput(micro, CacheMode::kFullKv, batch, 1024, 32, &naive_bytes);
    Result expanded = decode_throughput(micro, CacheMode::kLatentExpanded, batch, 1024, 32, &expanded_bytes);
    Result absorbed = decode_throughput(micro, CacheMode::kLatentAbsorbed, batch, 1024, 32, &absorbed_bytes);
    auto row = [](const char* name, const Result& r, int64_t bytes) {
      std::printf("  %-34s %8.1f tokens/s  KV cache %8.2f MB  peak RSS %7.1f MB\n", name, r.tokens_per_s,
                  bytes / 1048576.0, r.peak_mb);
    };
    row("naive (per-head K/V cache)", naive, naive_bytes);
    row("latent cache, re-expanded", expanded, expanded_bytes);
    row("latent cache, absorbed (default)", absorbed, absorbed_bytes);
    const double ratio = absorbed.tokens_per_s / naive.tokens_per_s;
    std::printf("  absorbed / naive decode speed: %.2fx\n", ratio);
    if (batch == 1) ratio_b1 = ratio;
    ratio_bmax = ratio;
    size_ratio = static_cast<double>(naive_bytes) / static_cast<double>(absorbed_bytes);
  }
  std::printf("\nsummary: absorbed/naive decode %.2fx at batch 1, %.2fx at batch 16 (target >= 2x); "
              "naive/latent KV cache %.2fx smaller (target >= 4x)\n", ratio_b1, ratio_bmax, size_ratio);
  return 0;
}
