// Structured pruning makes the model smaller and faster, measured: `micro` (random weights) and its
// structurally pruned versions (`dsforge prune --method experts|heads|neurons --amount 0.25|0.5`; experts
// ranked on TinyStories calibration text), one thread: parameters, model.safetensors size, a training step
// (forward + backward of 8 x 128 tokens, the loss with MTP), decode tokens/s at batch 1 (16-token prompt,
// 128 new tokens, greedy) and at batch 16, each the median of 3, with the speed-up against the unpruned
// model, and each variant's peak RSS. Unstructured magnitude pruning is not here: its zeros are stored
// and multiplied like any other weight (smaller only when compressed).
//
//   ./build/bench_prune [--threads 1]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "bench_models.h"
#include "bench_util.h"
#include "dsforge/compress/prune.h"
#include "dsforge/core/error.h"
#include "dsforge/model/generate.h"

using namespace dsforge;
using namespace dsforge::bench;

int main(int argc, char** argv) {
  int threads = 1;
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
  at::set_num_threads(threads);
  const std::string dir = (std::filesystem::temp_directory_path() / ("dsforge-bench-prune-" + std::to_string(::getpid()))).string();
  make_dirs(dir);
  const std::string base = make_random_model(dir, "micro");
  const std::string calib = dir + "/calib.txt";
  write_file_atomic(calib, tokenizer_corpus().substr(0, 200000));

  std::vector<std::pair<std::string, std::string>> variants{{"unpruned", base}};
  for (const char* method : {"experts", "heads", "neurons"})
    for (double amount : {0.25, 0.5}) {
      compress::PruneOptions o;
      o.method = method;
      o.amount = amount;
      if (o.method == "experts") o.calib_path = calib;
      o.calib_seq_len = 128;
      const std::string out = fmt(dir, "/", method, "-", amount);
      compress::prune_model(base, out, o);
      variants.push_back({fmt(method, " ", amount), out});
    }

  std::printf("== micro, random weights, %d thread(s): structured pruning against the unpruned model\n", threads);
  std::printf("| variant | parameters | model.safetensors MB | train step ms | decode tok/s b1 | decode tok/s b16 | "
              "step speed-up | b1 speed-up | b16 speed-up | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  double step0 = 0, b1_0 = 0, b16_0 = 0;
  for (const auto& [name, folder] : variants) {
    reset_peak_rss();
    model::CausalLm m = model::load_pretrained(folder);
    const int64_t V = m->config().vocab_size;
    // Training step: the model's own loss (main + MTP + balance) on 8 rows, forward and backward.
    m->train();
    const at::Tensor rows = at::randint(1, V, {8, 128 + 1 + m->extra_target_tokens()}, at::kLong);
    auto step = [&] {
      m->zero_grad();
      m->loss(rows, 0.3).total.backward();
    };
    step();  // warm-up
    const double step_s = median3(step);
    m->eval();
    const DecodeSpeed d = decode_speed(m);
    const double b1 = d.batch1, b16 = d.batch16;
    if (name == "unpruned") step0 = step_s, b1_0 = b1, b16_0 = b16;
    std::printf("| %s | %lld | %.1f | %.1f | %.0f | %.0f | %.2fx | %.2fx | %.2fx | %.0f |\n", name.c_str(),
                static_cast<long long>(model::count_parameters(*m)),
                static_cast<double>(std::filesystem::file_size(folder + "/model.safetensors")) / 1e6, step_s * 1e3, b1, b16,
                step0 / step_s, b1 / b1_0, b16 / b16_0, peak_rss_mb());
    std::fflush(stdout);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
