// Data parallelism on this machine, two figures, each beside its reference measured in the same run:
//  1. All-reduce time and bandwidth per bucket size through dsforge's Comm (c10d Gloo, 2 ranks on
//     loopback), against PyTorch's own Gloo process group (bench/dist_allreduce_ref.py).
//  2. Scaling efficiency of `dsforge train`: tokens/s with 2 ranks x 1 thread over twice 1 rank x 1
//     thread, same model; once with the same global batch (strong scaling: each rank gets half the
//     rows) and once with the same rows per rank (weak scaling, what DDP is used for); peak RSS per run.
//
//   ./build/bench_dist [--sizes 0.25,1,4,25,100] [--iters 20] [--steps 40] [--bucket-mb 25] [--skip-scaling]
//
// Bus bandwidth is NCCL's convention: algorithm bandwidth (bytes / time) x 2 (n - 1) / n, the bytes
// each rank sends and receives in a ring all-reduce.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/dist/comm.h"
#include "dsforge/dist/env.h"
#include "dsforge/dist/launch.h"

using namespace dsforge;
using namespace dsforge::bench;
namespace fs = std::filesystem;

namespace {

std::vector<double> parse_sizes(const std::string& s) {
  std::vector<double> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stod(item));
  return out;
}

// A rank of the all-reduce measurement (started by dist::launch with RANK set).
int allreduce_worker(const std::vector<double>& sizes, int iters, const std::string& out_path) {
  at::set_num_threads(1);
  set_log_quiet(true);
  auto comm = dist::Comm::connect(dist::dist_env_from_environment(), 60);
  nlohmann::json results = nlohmann::json::array();
  for (double mb : sizes) {
    at::Tensor t = at::ones({static_cast<int64_t>(mb * (1 << 20) / 4)}, at::kFloat);
    comm->allreduce_sum(t);  // warm-up
    comm->barrier();
    const double s = seconds([&] {
      for (int i = 0; i < iters; ++i) comm->allreduce_sum(t);
      comm->barrier();
    });
    results.push_back({{"mb", mb}, {"seconds", s / iters}});
  }
  const nlohmann::json mine = {{"results", results}, {"peak_rss_mb", peak_rss_mb()}};
  write_file_atomic(out_path + "." + std::to_string(comm->rank()), mine.dump());
  return 0;
}

// Runs a shell command in a child and returns its exit code and the peak RSS of its descendants.
std::pair<int, double> run_measured(const std::string& cmd) {
  int fds[2];
  if (pipe(fds) != 0) throw Error("pipe failed");
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const int status = std::system(cmd.c_str());
    rusage ru{};
    getrusage(RUSAGE_CHILDREN, &ru);
    const double mb = static_cast<double>(ru.ru_maxrss) / 1024.0;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    if (write(fds[1], &mb, sizeof mb) != sizeof mb) _exit(1);
    _exit(code);
  }
  close(fds[1]);
  double mb = 0;
  if (read(fds[0], &mb, sizeof mb) != sizeof mb) mb = 0;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 1, mb};
}

// tokens/s of the last logging window in a run's metrics.jsonl.
double last_tokens_per_sec(const std::string& run_dir) {
  std::istringstream in(read_file(path_join(run_dir, "metrics.jsonl")));
  double tps = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("kind", "") == "train") tps = j.at("tokens_per_sec").get<double>();
  }
  return tps;
}

}  // namespace

int main(int argc, char** argv) {
  std::string sizes_arg = "0.25,1,4,25,100";
  int iters = 20, steps = 40;
  double bucket_mb = 25.0;
  bool skip_scaling = false;
  std::string worker_out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw ConfigError(fmt(a, " needs a value"));
      return argv[++i];
    };
    if (a == "--sizes") sizes_arg = next();
    else if (a == "--iters") iters = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--skip-scaling") skip_scaling = true;
    else if (a == "--bucket-mb") bucket_mb = std::stod(next());
    else if (a == "--worker-out") worker_out = next();
    else {
      std::fprintf(stderr, "usage: bench_dist [--sizes MB,MB,...] [--iters N] [--steps N] [--bucket-mb MB] [--skip-scaling]\n");
      return 2;
    }
  }
  const std::vector<double> sizes = parse_sizes(sizes_arg);
  if (!worker_out.empty()) return allreduce_worker(sizes, iters, worker_out);

  char tmpl[] = "/tmp/dsforge-bench-dist-XXXXXX";
  const std::string work = mkdtemp(tmpl);
  setenv("OMP_NUM_THREADS", "1", 1);

  // 1. All-reduce: dsforge's Comm against PyTorch's Gloo group, same sizes, same iterations.
  std::printf("all-reduce, 2 ranks x 1 thread on loopback, %d iterations per size\n", iters);
  dist::LaunchOptions lo;
  lo.nproc_per_node = 2;
  lo.master_port = 0;
  const std::string out = path_join(work, "allreduce.json");
  set_log_quiet(true);
  if (dist::launch(lo, {"--worker-out", out, "--sizes", sizes_arg, "--iters", std::to_string(iters)}) != 0) {
    std::fprintf(stderr, "bench_dist: the all-reduce ranks failed\n");
    return 1;
  }
  set_log_quiet(false);
  const auto r0 = nlohmann::json::parse(read_file(out + ".0")), r1 = nlohmann::json::parse(read_file(out + ".1"));
  const std::string ref_cmd = fmt("/usr/bin/python3 ", DSFORGE_SOURCE_DIR, "/bench/dist_allreduce_ref.py --port ",
                                  29700 + getpid() % 200, " --sizes ", sizes_arg, " --iters ", iters);
  std::string ref_text;
  if (FILE* p = popen(ref_cmd.c_str(), "r")) {
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p)) ref_text.append(buf, n);
    if (pclose(p) != 0) ref_text.clear();
  }
  nlohmann::json ref;
  if (!ref_text.empty()) ref = nlohmann::json::parse(ref_text);
  else std::printf("  (PyTorch reference unavailable: %s failed)\n", ref_cmd.c_str());
  std::printf("  %9s  %11s  %11s  %11s  %12s  %13s\n", "size MB", "dsforge ms", "algbw GB/s", "busbw GB/s", "PyTorch ms",
              "PyTorch/dsforge");
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double s = std::max(r0["results"][i]["seconds"].get<double>(), r1["results"][i]["seconds"].get<double>());
    const double bytes = sizes[i] * (1 << 20);
    const double alg = bytes / s / 1e9, bus = alg * 2.0 * (2 - 1) / 2;
    if (ref.is_null()) {
      std::printf("  %9.2f  %11.3f  %11.2f  %11.2f\n", sizes[i], 1e3 * s, alg, bus);
    } else {
      const double rs = ref["results"][i]["seconds"].get<double>();
      std::printf("  %9.2f  %11.3f  %11.2f  %11.2f  %12.3f  %12.2fx\n", sizes[i], 1e3 * s, alg, bus, 1e3 * rs, rs / s);
    }
  }
  std::printf("  peak RSS per rank: dsforge %.0f MB", std::max(r0["peak_rss_mb"].get<double>(), r1["peak_rss_mb"].get<double>()));
  if (!ref.is_null()) std::printf(", PyTorch %.0f MB", ref["peak_rss_mb"].get<double>());
  std::printf("\n\n");
  if (skip_scaling) return 0;

  // 2. Scaling of `dsforge train`: the same global batch on 1 rank and on 2 ranks, 1 thread each.
  const std::string cli = DSFORGE_CLI, cfg = path_join(work, "bench.toml");
  write_file_atomic(cfg, fmt("[run]\nout_dir = \"", path_join(work, "base"), "\"\nthreads = 1\n",
                             "[data]\nsource = \"wordnet\"\nmax_docs = 20000\n[tokenizer]\nvocab_size = 2048\n",
                             "[model]\nconfig = \"nano\"\n[train]\nseq_len = 128\nbatch_size = 8\nmax_steps = ", steps,
                             "\nwarmup_steps = 5\nlog_every = ", steps / 2, "\neval_every = 100000\ncheckpoint_every = 100000\n",
                             "fit_micro_batch = false\npeak_gflops = 100\n[eval]\nbatches = 2\n"));
  for (const char* stage : {"data prepare", "tokenizer train", "tokenize"})
    if (run_measured(cli + " " + stage + " --config " + cfg + " >/dev/null 2>&1").first != 0) {
      std::fprintf(stderr, "bench_dist: %s failed\n", stage);
      return 1;
    }
  auto fresh = [&](const std::string& name) {
    const std::string dir = path_join(work, name);
    fs::create_directories(dir);
    for (const char* f : {"tokenizer.json", "shards"})
      fs::copy(path_join(path_join(work, "base"), f), path_join(dir, f), fs::copy_options::recursive);
    return dir;
  };
  const std::string one = fresh("one"), strong = fresh("strong"), weak = fresh("weak");
  const std::string bucket = fmt(" --dist.bucket_mb=", bucket_mb);
  auto [c1, rss1] = run_measured(cli + " train --config " + cfg + " --run.out_dir=" + one + " >" + one + "/log.txt 2>&1");
  auto [c2, rss2] = run_measured(cli + " launch --nproc-per-node 2 --master-port 0 -- train --config " + cfg +
                                 " --run.out_dir=" + strong + bucket + " >" + strong + "/log.txt 2>&1");
  auto [c3, rss3] = run_measured(cli + " launch --nproc-per-node 2 --master-port 0 -- train --config " + cfg +
                                 " --run.out_dir=" + weak + bucket + " --train.batch_size=16 >" + weak + "/log.txt 2>&1");
  // The ceiling on this machine: two independent 1-rank runs at once share the cores' caches and memory
  // bandwidth exactly as two ranks do, but never communicate.
  const std::string ind_a = fresh("ind_a"), ind_b = fresh("ind_b");
  auto [c4, rss4] = run_measured("(" + cli + " train --config " + cfg + " --run.out_dir=" + ind_a + " >" + ind_a +
                                 "/log.txt 2>&1 & " + cli + " train --config " + cfg + " --run.out_dir=" + ind_b + " >" +
                                 ind_b + "/log.txt 2>&1 & wait)");
  if (c1 != 0 || c2 != 0 || c3 != 0 || c4 != 0) {
    std::fprintf(stderr, "bench_dist: training failed; see %s/{one,strong,weak}/log.txt\n", work.c_str());
    return 1;
  }
  const double tps1 = last_tokens_per_sec(one), tps2 = last_tokens_per_sec(strong), tps3 = last_tokens_per_sec(weak);
  std::printf("dsforge train, DeepSeek nano, T=128, %d steps (last %d timed), gradient buckets of %.2f MB\n", steps,
              steps - steps / 2, bucket_mb);
  std::printf("  1 rank  x 1 thread, batch 8:              %8.0f tokens/s, peak RSS %.0f MB\n", tps1, rss1);
  std::printf("  2 ranks x 1 thread, batch 8 (4 per rank):  %8.0f tokens/s, peak RSS %.0f MB per rank\n", tps2, rss2);
  std::printf("  2 ranks x 1 thread, batch 16 (8 per rank): %8.0f tokens/s, peak RSS %.0f MB per rank\n", tps3, rss3);
  const double tps4 = last_tokens_per_sec(ind_a) + last_tokens_per_sec(ind_b);
  std::printf("  2 independent 1-rank runs at once (no communication): %8.0f tokens/s together\n", tps4);
  std::printf("  scaling efficiency, tokens/s over 2 x 1-rank: same global batch %.2f, same per-rank batch %.2f;\n"
              "  the same per-rank batch against the shared-machine ceiling: %.2f\n",
              tps2 / (2 * tps1), tps3 / (2 * tps1), tps3 / tps4);
  fs::remove_all(work);
  return 0;
}
