// Samplers propose the parameters of the next trial from the finished ones.
//
//   random  independent draws: uniform, log-uniform for log scales, uniform over choices
//   tpe     Tree-structured Parzen Estimator (Bergstra et al. 2011, "Algorithms for Hyper-Parameter
//           Optimization", §4) with Optuna 3.1's defaults: 10 random start-up trials, 24 EI candidates,
//           gamma(n) = min(ceil(0.1 n), 25), the prior component and magic-clip bandwidths, univariate;
//           `multivariate` models the unconditional parameters jointly (Falkner et al. 2018's kernel width)
//   gp      Gaussian-process expected improvement: Matern-5/2 ARD kernel on the unit cube, kernel
//           hyperparameters by maximising the log marginal likelihood, EI maximised over random and
//           local candidates (search/gp.h)
//
// Every sampler minimises. Trials are given oldest first; a sampler is deterministic for a given
// history and random generator state.
//
//   auto s = make_sampler({.name = "tpe"});
//   std::mt19937_64 rng(seed + trial_number);
//   Params p = s->sample(space, finished, rng);
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dsforge/search/space.h"

namespace dsforge::search {

enum class TrialState { kWaiting, kRunning, kComplete, kPruned, kFail };
const char* state_name(TrialState s);
TrialState state_from_name(const std::string& s);

struct TrialRecord {
  int64_t number = 0;
  TrialState state = TrialState::kComplete;
  Params params;
  double value = 0;                          // the objective (COMPLETE), the last reported value (PRUNED)
  std::map<int64_t, double> intermediate;    // step -> validation loss
  std::string error;                         // FAIL
};

struct SamplerOptions {
  std::string name = "tpe";  // random, tpe, gp
  int64_t n_startup_trials = 10;
  int64_t n_ei_candidates = 24;  // tpe
  // tpe: true (default) draws the unconditional parameters together from joint kernels, one per trial,
  // each as wide in every dimension as Optuna's independent kernel would be there (the larger gap to its
  // sorted neighbours, magic-clipped); false: each parameter on its own (Optuna 3.1's default). One
  // parameter: the two are the same sampler. bench_search: at least as good as Optuna's default TPE on
  // 4 of its 5 functions after 100 trials on each of three draws of seeds (bench/RESULTS.md).
  bool multivariate = true;
  // tpe, multivariate: one width per dimension by Scott's rule, 0.2 (high - low) n^(-1 / (d + 4)), for
  // every kernel (Optuna 3.1's multivariate=True), instead of the neighbour gaps.
  bool scott_bandwidth = false;
  double prior_weight = 1.0;     // tpe
  // tpe: false (default) evaluates each numerical kernel as Optuna 3.1 does, the standard normal
  // density of (x - mu) / sigma over its truncated mass, without the 1 / sigma factor of a true
  // density (Optuna 3.1's _truncnorm.logpdf omits it); this favours wide kernels in l(x) / g(x).
  // true: the exact mixture density.
  bool exact_density = false;
  int64_t gp_fit_iters = 60;     // gp: gradient steps of the marginal likelihood per trial
  int64_t gp_candidates = 1000;  // gp: random EI candidates before the local search
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual Params sample(const SearchSpace& space, const std::vector<TrialRecord>& trials, std::mt19937_64& rng) = 0;
};

std::unique_ptr<Sampler> make_sampler(const SamplerOptions& opts);

// One independent draw of `p` (its internal coordinate), as the random sampler makes it.
double sample_uniform(const Param& p, std::mt19937_64& rng);
// Draws every active parameter independently.
Params sample_random(const SearchSpace& space, std::mt19937_64& rng);

// The Parzen estimator of one group of trials (TPE's l(x) or g(x)) over the parameters `params`
// (one for univariate TPE): a weighted mixture of one kernel per observation plus the prior kernel.
// Numerical parameters: normals truncated to the internal range; categorical ones: a categorical
// kernel with 1 + prior_weight / (n + 1) on the observed choice and prior_weight / (n + 1) on the
// others, normalised (n observations; Optuna 3.1's rule), the prior uniform. Exposed for tests.
class ParzenEstimator {
 public:
  // `obs[i][d]` = internal coordinate of parameter d of observation i (oldest first).
  ParzenEstimator(const std::vector<const Param*>& params, const std::vector<std::vector<double>>& obs,
                  double prior_weight, bool scott_bandwidth, bool exact_density = true);
  // Internal coordinates, snapped to valid values (steps, choices).
  std::vector<double> sample(std::mt19937_64& rng) const;
  // log density (numerical, continuous), log mass (discrete steps and categorical), per the kernels.
  double log_pdf(const std::vector<double>& x) const;

  const std::vector<double>& weights() const { return weights_; }
  const std::vector<std::vector<double>>& mus() const { return mus_; }      // [d][k]
  const std::vector<std::vector<double>>& sigmas() const { return sigmas_; }  // [d][k]

 private:
  std::vector<const Param*> params_;
  bool exact_density_ = true;  // false: kernels without their 1 / sigma factor (Optuna 3.1, SamplerOptions)
  std::vector<double> weights_;                 // [k], components = observations + prior (last)
  std::vector<std::vector<double>> mus_, sigmas_;  // numerical dims
  std::vector<std::vector<std::vector<double>>> cat_probs_;  // categorical dims: [d][k][choice]
};

// Optuna's defaults: gamma(n) = min(ceil(0.1 n), 25); weights: 1 for the newest 25, a linear ramp
// from 1/n below them.
int64_t tpe_gamma(int64_t n);
std::vector<double> tpe_weights(int64_t n);

// Standard normal helpers.
double normal_cdf(double z);
double normal_pdf(double z);
double normal_quantile(double p);

}  // namespace dsforge::search
