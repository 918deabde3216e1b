// Training throughput against PyTorch: the same model, step and thread count trained by dsforge and
// by bench/train_throughput_ref.py (python3-torch, eager), alternating run by run, printing tokens/s,
// the ratio, peak RSS of each, and model FLOPs utilisation against the matmul peak measured first.
// "ratio" is best against best over the rounds; "paired" the median over rounds of dsforge's run over
// the PyTorch run right after it, which cancels most of a shared machine's slow drifts.
//
//   ./build/bench_train_throughput [--steps 8] [--rounds 2] [--threads 2] [--only gpt2-4L] [--profile trace.json]
//                                  [--dsforge-only 1]   (no PyTorch runs: for profiling dsforge with perf)
//
// The step: random tokens [B, T + 1 (+ MTP depth)], zero_grad, forward + loss (bf16 autocast when
// asked), backward, clip to norm 1, AdamW, and the expert-bias update for DeepSeek.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "bench_util.h"
#include "dsforge/core/cpu_allocator.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/model/info.h"
#include "dsforge/train/optim.h"
#include "dsforge/train/precision.h"
#include "dsforge/train/progress.h"

using namespace dsforge;
using namespace dsforge::bench;

namespace {

struct Case {
  std::string name;
  model::ModelConfig config;
  int64_t batch, seq;
  std::string precision;
};

struct Run {
  double tokens_per_s = 0, peak_mb = 0, loss = 0;
  int64_t params = 0;
};

model::ModelConfig gpt2_shape(int64_t layers, int64_t d, int64_t heads, int64_t vocab) {
  model::ModelConfig c = model::model_config_from_preset("gpt2-tiny");
  c.num_hidden_layers = layers;
  c.hidden_size = d;
  c.num_attention_heads = heads;
  c.intermediate_size = 4 * d;
  c.vocab_size = vocab;
  return c;
}

std::string g_profile;  // --profile FILE: a Chrome trace of the measured dsforge steps

Run run_dsforge(const Case& k, int steps, int warmup) {
  core::release_cpu_cache();  // the previous case's blocks must not count against this one
  reset_peak_rss();
  model::CausalLm m = model::build_model(k.config);
  m->init_weights(0.02, 0);
  m->set_aux_alpha(0.0);
  m->train();
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& p : m->named_parameters()) named.emplace_back(p.key(), p.value());
  train::AdamW opt(named, {1e-3, 0.9, 0.95, 1e-8, 0.1});
  std::vector<at::Tensor> params;
  for (auto& [n, p] : named) params.push_back(p);
  const c10::Device cpu(c10::kCPU);
  const auto dtype = train::autocast_dtype(k.precision, cpu);
  auto gen = at::detail::createCPUGenerator(1);
  const int64_t row = k.seq + 1 + m->extra_target_tokens();
  Run r;
  r.params = model::count_parameters(*m);
  double t = 0;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  for (int s = 0; s < warmup + steps; ++s) {
    if (s == warmup && !g_profile.empty()) profile = std::make_unique<torch::autograd::profiler::RecordProfile>(g_profile);
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor tokens = at::randint(k.config.vocab_size, {k.batch, row}, gen, at::kLong);
    opt.zero_grad();
    model::LossOutput out;
    {
      train::AutocastScope autocast(cpu, dtype);
      out = m->loss(tokens, 0.3);
    }
    out.total.backward();
    train::clip_grad_norm(params, 1.0);
    opt.step();
    m->update_expert_bias(1e-3);
    r.loss = out.total.item<double>();
    if (s >= warmup) t += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  profile.reset();
  r.tokens_per_s = static_cast<double>(steps * k.batch * k.seq) / t;
  r.peak_mb = peak_rss_mb();
  return r;
}

Run run_pytorch(const Case& k, int steps, int warmup, int threads, const std::string& config_path) {
  const std::string cmd = fmt("/usr/bin/python3 ", DSFORGE_SOURCE_DIR, "/bench/train_throughput_ref.py ", config_path,
                              " --batch ", k.batch, " --seq ", k.seq, " --steps ", steps, " --warmup ", warmup,
                              " --threads ", threads, " --precision ", k.precision);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe.get())) out.append(buf, n);
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  return {j["tokens_per_sec"].get<double>(), j["peak_rss_mb"].get<double>(), j["final_loss"].get<double>(),
          j["params"].get<int64_t>()};
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 8, rounds = 2, threads = 2;
  std::string only;
  bool dsforge_only = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
    else if (!std::strcmp(argv[i], "--profile")) g_profile = argv[i + 1];
    else if (!std::strcmp(argv[i], "--dsforge-only")) dsforge_only = std::atoi(argv[i + 1]) != 0;
  }
  at::set_num_threads(threads);
  core::install_cpu_allocator();  // as the dsforge CLI does (DSFORGE_CPU_CACHE_MB=0: ATen's allocator)
  if (std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") != 0) {
    std::printf("bench_train_throughput: skipped, python3-torch is not installed (scripts/setup.sh installs it)\n");
    return 0;
  }
  const c10::Device cpu(c10::kCPU);
  // The peak is the best of three measurements spread over the run (a shared machine can be slow
  // during any one of them); MFU uses the best.
  double peak32 = train::measure_matmul_gflops(cpu, at::kFloat), peak16 = train::measure_matmul_gflops(cpu, at::kBFloat16);
  std::printf("matmul peak (1024^3, %d threads): fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s\n", threads, peak32, peak16);

  std::vector<Case> cases = {
      {"gpt2-4L/256/T256/B8/V8192", gpt2_shape(4, 256, 4, 8192), 8, 256, "fp32"},
      {"gpt2-6L/384/T256/B8/V16384", gpt2_shape(6, 384, 6, 16384), 8, 256, "fp32"},
      {"gpt2-4L/256/T256/B8/V8192", gpt2_shape(4, 256, 4, 8192), 8, 256, "bf16"},
      {"gpt2-6L/384/T256/B8/V16384", gpt2_shape(6, 384, 6, 16384), 8, 256, "bf16"},
      {"deepseek-micro/T256/B8", model::model_config_from_preset("micro"), 8, 256, "fp32"},
      {"deepseek-micro/T256/B8", model::model_config_from_preset("micro"), 8, 256, "bf16"},
  };
  const std::string dir = fmt("/tmp/dsforge-bench-train-", getpid());
  make_dirs(dir);
  std::printf("%-30s %-5s %12s %12s %7s %7s %9s %9s %10s %10s\n", "model", "prec", "dsforge t/s", "pytorch t/s", "ratio",
              "paired", "MFU ds", "MFU pt", "RSS ds MB", "RSS pt MB");
  for (const Case& k : cases) {
    if (!only.empty() && (k.name + " " + k.precision).find(only) == std::string::npos) continue;  // e.g. "4L", "fp32", "V8192 bf16"
    const std::string cfg_path = path_join(dir, "config.json");
    write_file_atomic(cfg_path, model::model_config_to_json(k.config));
    Run best_ds, best_pt;
    std::vector<double> paired;  // dsforge / PyTorch within each round: adjacent runs share the machine's state
    for (int r = 0; r < rounds; ++r) {  // alternate so both see the same machine state
      Run ds = run_dsforge(k, steps, 2);
      if (dsforge_only) {
        std::printf("%-30s %-5s %12.0f\n", k.name.c_str(), k.precision.c_str(), ds.tokens_per_s);
        continue;
      }
      Run pt = run_pytorch(k, steps, 2, threads, cfg_path);
      if (ds.params != pt.params)
        std::printf("warning: parameter counts differ (dsforge %lld, pytorch %lld)\n", static_cast<long long>(ds.params),
                    static_cast<long long>(pt.params));
      if (ds.tokens_per_s > best_ds.tokens_per_s) best_ds = ds;
      if (pt.tokens_per_s > best_pt.tokens_per_s) best_pt = pt;
      paired.push_back(ds.tokens_per_s / pt.tokens_per_s);
    }
    if (dsforge_only) continue;
    std::sort(paired.begin(), paired.end());
    const size_t mid = paired.size() / 2;
    const double median = paired.size() % 2 ? paired[mid] : 0.5 * (paired[mid - 1] + paired[mid]);
    peak32 = std::max(peak32, train::measure_matmul_gflops(cpu, at::kFloat));
    peak16 = std::max(peak16, train::measure_matmul_gflops(cpu, at::kBFloat16));
    const double flops = model::train_flops_per_token(k.config, k.seq);
    const double peak = (k.precision == "bf16" ? peak16 : peak32) * 1e9;
    std::printf("%-30s %-5s %12.0f %12.0f %6.2fx %6.2fx %8.1f%% %8.1f%% %10.0f %10.0f\n", k.name.c_str(), k.precision.c_str(),
                best_ds.tokens_per_s, best_pt.tokens_per_s, best_ds.tokens_per_s / best_pt.tokens_per_s, median,
                100 * best_ds.tokens_per_s * flops / peak, 100 * best_pt.tokens_per_s * flops / peak, best_ds.peak_mb,
                best_pt.peak_mb);
    std::fflush(stdout);
  }
  std::printf("best matmul peak seen during the run: fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s (the MFU columns use it)\n",
              peak32, peak16);
  remove_all(dir);
  return 0;
}
