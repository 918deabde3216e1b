// Samplers side by side with Optuna: dsforge TPE, dsforge GP-EI and Optuna 3.1's TPE (bench/search_ref.py,
// run with /usr/bin/python3) on Branin, Hartmann-6, Rosenbrock-4, a noisy quadratic (3-D, noise sd 0.1)
// and Styblinski-Tang-10, the same seeds and trial budget: the median regret (best value - known
// minimum; for the noisy function the noise-free value of the best observed trial) after 50 and 100
// trials, the sampler's time per trial, and each process's peak RSS.
//
// dsforge TPE is its default: joint kernels with neighbour-gap widths. Three variants are run beside it,
// each against Optuna's default TPE in a second table: independent kernels (Optuna 3.1's default, the
// same algorithm as the reference), joint kernels with Scott's-rule widths (Optuna 3.1's multivariate),
// and the joint kernels with the exact mixture density (exact_density).
//
//   ./build/bench_search [--seeds 20] [--first-seed 0] [--trials 100] [--only branin,hartmann6] [--skip-optuna]
// (--first-seed K runs seeds K..K+seeds-1 on both sides: another draw of the same comparison.)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <unistd.h>
#include <string>
#include <vector>

#include "bench_util.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/search/optimize.h"

using namespace dsforge;
using namespace dsforge::search;

namespace {

struct Function {
  std::string name;
  std::vector<std::pair<double, double>> bounds;
  double fmin;
  double noise_sd;
  std::function<double(const std::vector<double>&)> f;
};

const double kPi = 3.14159265358979323846;

std::vector<Function> functions() {
  std::vector<Function> fs;
  fs.push_back({"branin", {{-5, 10}, {0, 15}}, 0.397887357729739, 0, [](const std::vector<double>& x) {
                  const double b = 5.1 / (4 * kPi * kPi), c = 5 / kPi, t = 1 / (8 * kPi);
                  return std::pow(x[1] - b * x[0] * x[0] + c * x[0] - 6, 2) + 10 * (1 - t) * std::cos(x[0]) + 10;
                }});
  fs.push_back({"hartmann6", std::vector<std::pair<double, double>>(6, {0, 1}), -3.32236801141551, 0, [](const std::vector<double>& x) {
                  static const double a[4][6] = {{10, 3, 17, 3.5, 1.7, 8}, {0.05, 10, 17, 0.1, 8, 14},
                                                 {3, 3.5, 1.7, 10, 17, 8}, {17, 8, 0.05, 10, 0.1, 14}};
                  static const double p[4][6] = {{1312, 1696, 5569, 124, 8283, 5886}, {2329, 4135, 8307, 3736, 1004, 9991},
                                                 {2348, 1451, 3522, 2883, 3047, 6650}, {4047, 8828, 8732, 5743, 1091, 381}};
                  static const double alpha[4] = {1.0, 1.2, 3.0, 3.2};
                  double s = 0;
                  for (int i = 0; i < 4; ++i) {
                    double inner = 0;
                    for (int j = 0; j < 6; ++j) inner += a[i][j] * std::pow(x[static_cast<size_t>(j)] - 1e-4 * p[i][j], 2);
                    s -= alpha[i] * std::exp(-inner);
                  }
                  return s;
                }});
  fs.push_back({"rosenbrock4", std::vector<std::pair<double, double>>(4, {-2.048, 2.048}), 0, 0, [](const std::vector<double>& x) {
                  double s = 0;
                  for (size_t i = 0; i + 1 < x.size(); ++i) s += 100 * std::pow(x[i + 1] - x[i] * x[i], 2) + std::pow(1 - x[i], 2);
                  return s;
                }});
  fs.push_back({"noisy_quadratic", std::vector<std::pair<double, double>>(3, {-1, 1}), 0, 0.1, [](const std::vector<double>& x) {
                  double s = 0;
                  for (double v : x) s += (v - 0.3) * (v - 0.3);
                  return s;
                }});
  fs.push_back({"styblinski_tang10", std::vector<std::pair<double, double>>(10, {-5, 5}), -39.1661657037714 * 10, 0,
                [](const std::vector<double>& x) {
                  double s = 0;
                  for (double v : x) s += v * v * v * v - 16 * v * v + 5 * v;
                  return s / 2;
                }});
  return fs;
}

SearchSpace space_for(const Function& fn) {
  SearchSpace s;
  s.source = fn.name;
  for (size_t i = 0; i < fn.bounds.size(); ++i) {
    Param p;
    p.name = "x" + std::to_string(i);
    p.low = fn.bounds[i].first;
    p.high = fn.bounds[i].second;
    s.params.push_back(p);
  }
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Result {
  std::map<int, std::vector<double>> regret;  // checkpoint -> per seed
  std::vector<double> sampler_s;              // per seed, seconds per trial
};

Result run_dsforge(const Function& fn, const SamplerOptions& so, int first_seed, int seeds, int trials,
                   const std::vector<int>& checkpoints) {
  const SearchSpace space = space_for(fn);
  Result r;
  for (int seed = first_seed; seed < first_seed + seeds; ++seed) {
    std::mt19937_64 noise(1000 + static_cast<uint64_t>(seed));
    std::normal_distribution<double> nd(0, fn.noise_sd > 0 ? fn.noise_sd : 1);
    std::vector<double> truth;
    auto objective = [&](const Params& p) {
      std::vector<double> x;
      for (const auto& q : space.params) x.push_back(p.at(q.name));
      const double v = fn.f(x);
      truth.push_back(v);
      return v + (fn.noise_sd > 0 ? nd(noise) : 0.0);
    };
    std::vector<double> secs;
    const auto t = optimize_in_memory(space, objective, trials, static_cast<uint64_t>(seed), so, &secs);
    for (int c : checkpoints) {
      size_t best = 0;
      for (size_t i = 0; i < static_cast<size_t>(c) && i < t.size(); ++i)
        if (t[i].value < t[best].value) best = i;
      r.regret[c].push_back(truth[best] - fn.fmin);
    }
    r.sampler_s.push_back(std::accumulate(secs.begin(), secs.end(), 0.0) / static_cast<double>(secs.size()));
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int seeds = 20, trials = 100, first_seed = 0;
  std::string only;
  bool skip_optuna = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seeds") && i + 1 < argc) seeds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--trials") && i + 1 < argc) trials = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--first-seed") && i + 1 < argc) first_seed = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else if (!std::strcmp(argv[i], "--skip-optuna")) skip_optuna = true;
  }
  std::vector<int> checkpoints{trials / 2, trials};
  const auto fns = functions();

  // Optuna first, in its own process.
  nlohmann::json ref;
  if (!skip_optuna) {
    if (std::system("/usr/bin/python3 -c 'import optuna' 2>/dev/null") != 0) {
      std::printf("bench_search: Optuna not installed (python3-optuna); dsforge only\n");
      skip_optuna = true;
    } else {
      const std::string out = "/tmp/bench_search_ref_" + std::to_string(::getpid()) + ".json";
      const std::string cmd = fmt("/usr/bin/python3 ", DSFORGE_SOURCE_DIR, "/bench/search_ref.py --seeds ", seeds, " --trials ",
                                  trials, " --first-seed ", first_seed, " --checkpoints ", checkpoints[0], ",", checkpoints[1], " --out ", out,
                                  only.empty() ? "" : " --only " + only);
      std::printf("running Optuna: %s\n", cmd.c_str());
      std::fflush(stdout);
      if (std::system(cmd.c_str()) != 0) {
        std::fprintf(stderr, "bench_search: %s failed\n", cmd.c_str());
        return 1;
      }
      ref = nlohmann::json::parse(read_file(out));
      std::remove(out.c_str());
    }
  }

  SamplerOptions tpe, gp;
  gp.name = "gp";
  std::printf("\nseeds %d..%d, %d trials; median regret (best - known minimum) after %d and %d trials; sampler ms per trial\n\n",
              first_seed, first_seed + seeds - 1, trials, checkpoints[0], checkpoints[1]);
  std::printf("| function | trials | dsforge TPE | dsforge GP | Optuna TPE | TPE / Optuna | GP / Optuna |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  std::string timing, variants;
  int tpe_wins = 0, n_fn = 0;
  SamplerOptions independent, scott, exact;
  independent.multivariate = false;
  scott.scott_bandwidth = true;
  exact.exact_density = true;
  const std::vector<std::pair<std::string, SamplerOptions>> variant_opts{
      {"independent", independent}, {"joint, Scott", scott}, {"joint, exact density", exact}};
  std::vector<int> variant_wins(variant_opts.size(), 0);
  dsforge::bench::reset_peak_rss();
  for (const auto& fn : fns) {
    if (!only.empty() && ("," + only + ",").find("," + fn.name + ",") == std::string::npos) continue;
    const Result a = run_dsforge(fn, tpe, first_seed, seeds, trials, checkpoints);
    const Result b = run_dsforge(fn, gp, first_seed, seeds, trials, checkpoints);
    std::vector<Result> vr;
    for (const auto& v : variant_opts) vr.push_back(run_dsforge(fn, v.second, first_seed, seeds, trials, checkpoints));
    std::vector<std::map<int, double>> ref_regret;
    double ref_ms = NAN;
    if (!skip_optuna) {
      const auto& r = ref["functions"][fn.name];
      std::vector<double> s;
      for (const auto& x : r["sampler_s_per_trial"]) s.push_back(x.get<double>());
      ref_ms = 1000 * median(s);
    }
    for (int c : checkpoints) {
      double o = NAN;
      if (!skip_optuna) {
        std::vector<double> v;
        for (const auto& seed : ref["functions"][fn.name]["regret"]) v.push_back(seed[std::to_string(c)].get<double>());
        o = median(v);
      }
      const double mt = median(a.regret.at(c)), mg = median(b.regret.at(c));
      std::printf("| %s | %d | %.4g | %.4g | %.4g | %.2f | %.2f |\n", fn.name.c_str(), c, mt, mg, o, mt / o, mg / o);
      std::string vals, ratios;
      for (size_t v = 0; v < vr.size(); ++v) {
        const double m = median(vr[v].regret.at(c));
        vals += fmt(" ", m, " |");
        ratios += fmt(" ", m / o, " |");
        if (c == trials && !(m > o)) ++variant_wins[v];
      }
      variants += fmt("| ", fn.name, " | ", c, " |", vals, " ", o, " |", ratios, "\n");
      if (c == trials) {
        ++n_fn;
        if (!(mt > o)) ++tpe_wins;
      }
    }
    std::fflush(stdout);
    timing += fmt("| ", fn.name, " | ", 1000 * median(a.sampler_s), " | ", 1000 * median(b.sampler_s), " | ", ref_ms, " |\n");
  }
  std::printf("\ndsforge TPE variants (median regret; Optuna's default TPE as above)\n\n");
  std::string head = "| function | trials |", rule = "|---|---:|", wins;
  for (const auto& v : variant_opts) head += " " + v.first + " |", rule += "---:|";
  head += " Optuna TPE |", rule += "---:|";
  for (size_t v = 0; v < variant_opts.size(); ++v)
    head += " " + variant_opts[v].first + " / Optuna |", rule += "---:|", wins += fmt(", ", variant_opts[v].first, " ", variant_wins[v]);
  std::printf("%s\n%s\n%s", head.c_str(), rule.c_str(), variants.c_str());
  std::printf("\nsampler time per trial (ms, median over seeds, mean over the %d trials)\n\n", trials);
  std::printf("| function | dsforge TPE | dsforge GP | Optuna TPE |\n|---|---:|---:|---:|\n%s", timing.c_str());
  std::printf("\npeak RSS: dsforge %.0f MB, Optuna (python) %.0f MB\n", dsforge::bench::peak_rss_mb(),
              skip_optuna ? NAN : ref["peak_rss_mb"].get<double>());
  if (!skip_optuna)
    std::printf("at least as good as Optuna TPE (median regret after %d trials): dsforge TPE on %d of %d functions%s\n", trials,
                tpe_wins, n_fn, wins.c_str());
  return 0;
}
