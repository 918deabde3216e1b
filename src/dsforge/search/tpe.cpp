// Random and TPE samplers, and the Parzen estimator TPE builds on (search/sampler.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "dsforge/core/error.h"
#include "dsforge/search/gp.h"
#include "dsforge/search/sampler.h"

namespace dsforge::search {
namespace {

constexpr double kLogFloor = -700.0;

// log(Phi(b) - Phi(a)) for a < b, accurate in either tail.
double log_normal_mass(double a, double b) {
  if (a > 0) return log_normal_mass(-b, -a);  // symmetry: the lower tail keeps erfc's relative precision
  const double m = 0.5 * (std::erfc(-b / std::sqrt(2.0)) - std::erfc(-a / std::sqrt(2.0)));
  return m > 0 ? std::log(m) : kLogFloor;
}

double log_sum_exp(const std::vector<double>& v) {
  const double m = *std::max_element(v.begin(), v.end());
  if (!std::isfinite(m)) return m;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

// A standard normal truncated to [a, b], by the inverse CDF (with an exponential tail when the range
// lies beyond what the CDF resolves).
double truncated_standard_normal(double a, double b, std::mt19937_64& rng) {
  if (a > 0) return -truncated_standard_normal(-b, -a, rng);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  const double pa = normal_cdf(a), pb = normal_cdf(b);
  if (pb - pa > 1e-300 && pb > 1e-300) {
    const double z = normal_quantile(pa + u01(rng) * (pb - pa));
    return std::clamp(z, a, b);
  }
  // Far lower tail: the density falls like exp(b z) near b.
  std::exponential_distribution<double> ex(1.0);
  return std::clamp(b - ex(rng) / std::max(std::abs(b), 1.0), a, b);
}

struct Observation {
  const TrialRecord* trial;
  std::vector<double> x;  // internal coordinates
};

// Optuna's order for the below/above split: complete trials by value, then pruned trials, those that
// got further first, then by their last reported value.
std::vector<const TrialRecord*> ranked(std::vector<const TrialRecord*> ts) {
  auto key = [](const TrialRecord* t) {
    if (t->state == TrialState::kComplete) return std::make_tuple(0, 0.0, t->value);
    if (t->intermediate.empty()) return std::make_tuple(2, 0.0, 0.0);
    const auto& last = *t->intermediate.rbegin();
    return std::make_tuple(1, -static_cast<double>(last.first), last.second);
  };
  std::stable_sort(ts.begin(), ts.end(), [&](auto* a, auto* b) { return key(a) < key(b); });
  return ts;
}

class RandomSampler : public Sampler {
 public:
  Params sample(const SearchSpace& space, const std::vector<TrialRecord>&, std::mt19937_64& rng) override {
    return sample_random(space, rng);
  }
};

class TpeSampler : public Sampler {
 public:
  explicit TpeSampler(SamplerOptions o) : o_(std::move(o)) {}

  Params sample(const SearchSpace& space, const std::vector<TrialRecord>& trials, std::mt19937_64& rng) override {
    std::vector<const TrialRecord*> done;
    for (const auto& t : trials)
      if (t.state == TrialState::kComplete || t.state == TrialState::kPruned) done.push_back(&t);
    if (static_cast<int64_t>(done.size()) < o_.n_startup_trials) return sample_random(space, rng);
    Params out;
    if (o_.multivariate) {
      std::vector<const Param*> group = space.unconditional();
      const std::vector<double> x = sample_group(group, done, rng);
      for (size_t d = 0; d < group.size(); ++d) out[group[d]->name] = group[d]->from_internal(x[d]);
    }
    for (const auto& p : space.params) {
      if (out.count(p.name) || !space.active(p, out)) continue;
      out[p.name] = p.from_internal(sample_group({&p}, done, rng)[0]);
    }
    return out;
  }

 private:
  // l(x) / g(x) over the trials that have every parameter of `group`; the best of n_ei_candidates
  // draws from l by log l - log g (Bergstra et al. 2011, eq. 4: EI grows with l/g).
  std::vector<double> sample_group(const std::vector<const Param*>& group, const std::vector<const TrialRecord*>& done,
                                   std::mt19937_64& rng) {
    // The split ranks every finished trial (gamma of their count); each side then keeps the trials
    // that have the group's parameters (a conditional parameter's inactive trials drop out).
    const std::vector<const TrialRecord*> order = ranked(done);
    const size_t n_below = std::min(static_cast<size_t>(tpe_gamma(static_cast<int64_t>(order.size()))), order.size());
    auto has_group = [&](const TrialRecord* t) {
      return std::all_of(group.begin(), group.end(), [&](const Param* p) { return t->params.count(p->name) > 0; });
    };
    std::vector<const TrialRecord*> below, above;
    for (size_t i = 0; i < order.size(); ++i)
      if (has_group(order[i])) (i < n_below ? below : above).push_back(order[i]);
    auto by_number = [](auto* a, auto* b) { return a->number < b->number; };
    std::sort(below.begin(), below.end(), by_number);
    std::sort(above.begin(), above.end(), by_number);
    auto coords = [&](const std::vector<const TrialRecord*>& ts) {
      std::vector<std::vector<double>> obs;
      for (const auto* t : ts) {
        std::vector<double> x;
        for (const auto* p : group) x.push_back(p->to_internal(t->params.at(p->name)));
        obs.push_back(std::move(x));
      }
      return obs;
    };
    const bool scott = o_.multivariate && o_.scott_bandwidth;
    const ParzenEstimator l(group, coords(below), o_.prior_weight, scott, o_.exact_density);
    const ParzenEstimator g(group, coords(above), o_.prior_weight, scott, o_.exact_density);
    std::vector<double> best;
    double best_score = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < o_.n_ei_candidates; ++i) {
      std::vector<double> x = l.sample(rng);
      const double score = l.log_pdf(x) - g.log_pdf(x);
      if (best.empty() || score > best_score) best_score = score, best = std::move(x);
    }
    return best;
  }

  SamplerOptions o_;
};

}  // namespace

const char* state_name(TrialState s) {
  switch (s) {
    case TrialState::kWaiting: return "WAITING";
    case TrialState::kRunning: return "RUNNING";
    case TrialState::kComplete: return "COMPLETE";
    case TrialState::kPruned: return "PRUNED";
    default: return "FAIL";
  }
}

TrialState state_from_name(const std::string& s) {
  if (s == "WAITING") return TrialState::kWaiting;
  if (s == "RUNNING") return TrialState::kRunning;
  if (s == "COMPLETE") return TrialState::kComplete;
  if (s == "PRUNED") return TrialState::kPruned;
  if (s == "FAIL") return TrialState::kFail;
  throw Error(fmt("unknown trial state '", s, "'"));
}

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI); }

// Acklam's rational approximation, refined by one Halley step (relative error ~1e-15).
double normal_quantile(double p) {
  if (p <= 0) return -std::numeric_limits<double>::infinity();
  if (p >= 1) return std::numeric_limits<double>::infinity();
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00};
  const double lo = 0.02425, hi = 1 - lo;
  double x;
  if (p < lo) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= hi) {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const double e = normal_cdf(x) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

int64_t tpe_gamma(int64_t n) { return std::min<int64_t>(static_cast<int64_t>(std::ceil(0.1 * static_cast<double>(n))), 25); }

std::vector<double> tpe_weights(int64_t n) {
  if (n <= 0) return {};
  if (n < 25) return std::vector<double>(static_cast<size_t>(n), 1.0);
  std::vector<double> w;
  const int64_t ramp = n - 25;  // numpy.linspace(1/n, 1, ramp)
  for (int64_t i = 0; i < ramp; ++i)
    w.push_back(ramp == 1 ? 1.0 / static_cast<double>(n)
                          : 1.0 / static_cast<double>(n) + (1.0 - 1.0 / static_cast<double>(n)) * static_cast<double>(i) / static_cast<double>(ramp - 1));
  w.insert(w.end(), 25, 1.0);
  return w;
}

double sample_uniform(const Param& p, std::mt19937_64& rng) {
  if (p.kind == ParamKind::kCategorical)
    return static_cast<double>(std::uniform_int_distribution<size_t>(0, p.choices.size() - 1)(rng));
  if (p.kind == ParamKind::kInt && !p.log) {
    const auto n = static_cast<int64_t>(std::llround((p.high - p.low) / p.step));
    return p.low + p.step * static_cast<double>(std::uniform_int_distribution<int64_t>(0, n)(rng));
  }
  std::uniform_real_distribution<double> u(p.internal_low(), p.internal_high());
  return p.from_internal(u(rng));
}

Params sample_random(const SearchSpace& space, std::mt19937_64& rng) {
  Params out;
  for (const auto& p : space.params)
    if (space.active(p, out)) out[p.name] = sample_uniform(p, rng);
  return out;
}

ParzenEstimator::ParzenEstimator(const std::vector<const Param*>& params, const std::vector<std::vector<double>>& obs,
                                 double prior_weight, bool scott_bandwidth, bool exact_density)
    : params_(params), exact_density_(exact_density) {
  const size_t n = obs.size();
  weights_ = tpe_weights(static_cast<int64_t>(n));
  weights_.push_back(prior_weight);
  const double wsum = std::accumulate(weights_.begin(), weights_.end(), 0.0);
  for (double& w : weights_) w /= wsum;
  mus_.resize(params.size());
  sigmas_.resize(params.size());
  cat_probs_.resize(params.size());
  for (size_t d = 0; d < params.size(); ++d) {
    const Param& p = *params[d];
    if (!p.numeric()) {
      const size_t nc = p.choices.size();
      auto& probs = cat_probs_[d];
      // Optuna 3.1: every observation's kernel adds prior_weight / (n + 1) to each choice.
      for (size_t k = 0; k < n; ++k) {
        std::vector<double> pk(nc, prior_weight / static_cast<double>(n + 1));
        pk[static_cast<size_t>(obs[k][d])] += 1.0;
        const double s = std::accumulate(pk.begin(), pk.end(), 0.0);
        for (double& v : pk) v /= s;
        probs.push_back(std::move(pk));
      }
      probs.emplace_back(nc, 1.0 / static_cast<double>(nc));  // the prior: uniform
      continue;
    }
    const double lo = p.internal_low(), hi = p.internal_high();
    std::vector<double> mus;
    for (size_t k = 0; k < n; ++k) mus.push_back(obs[k][d]);
    mus.push_back(0.5 * (lo + hi));  // the prior's centre
    const size_t m = mus.size();
    std::vector<double> sig(m);
    if (scott_bandwidth) {
      const double s = 0.2 * std::pow(static_cast<double>(std::max<size_t>(n, 1)), -1.0 / (static_cast<double>(params.size()) + 4)) * (hi - lo);
      std::fill(sig.begin(), sig.end(), s);
    } else {
      // Each kernel as wide as the larger gap to its sorted neighbours (the range ends count as
      // neighbours, except that the outermost kernels only look inwards: consider_endpoints=False).
      std::vector<size_t> idx(m);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return mus[a] < mus[b]; });
      std::vector<double> ext{lo};
      for (size_t i : idx) ext.push_back(mus[i]);
      ext.push_back(hi);
      std::vector<double> sorted_sig(m);
      for (size_t i = 0; i < m; ++i) sorted_sig[i] = std::max(ext[i + 1] - ext[i], ext[i + 2] - ext[i + 1]);
      if (ext.size() >= 4) {
        sorted_sig[0] = ext[2] - ext[1];
        sorted_sig[m - 1] = ext[m] - ext[m - 1];
      }
      for (size_t i = 0; i < m; ++i) sig[idx[i]] = sorted_sig[i];
    }
    // Magic clip (Bergstra et al.'s hyperopt): no kernel narrower than range / min(100, 1 + kernels).
    const double maxsig = hi - lo, minsig = (hi - lo) / std::min(100.0, 1.0 + static_cast<double>(m));
    for (double& s : sig) s = std::clamp(s, minsig, maxsig);
    sig[m - 1] = hi - lo;  // the prior: as wide as the range
    mus_[d] = std::move(mus);
    sigmas_[d] = std::move(sig);
  }
}

std::vector<double> ParzenEstimator::sample(std::mt19937_64& rng) const {
  std::discrete_distribution<size_t> pick(weights_.begin(), weights_.end());
  const size_t k = pick(rng);
  std::vector<double> x(params_.size());
  for (size_t d = 0; d < params_.size(); ++d) {
    const Param& p = *params_[d];
    if (!p.numeric()) {
      const auto& pk = cat_probs_[d][k];
      x[d] = static_cast<double>(std::discrete_distribution<size_t>(pk.begin(), pk.end())(rng));
      continue;
    }
    const double lo = p.internal_low(), hi = p.internal_high(), mu = mus_[d][k], s = sigmas_[d][k];
    const double z = truncated_standard_normal((lo - mu) / s, (hi - mu) / s, rng);
    x[d] = p.to_internal(p.from_internal(mu + s * z));
  }
  return x;
}

double ParzenEstimator::log_pdf(const std::vector<double>& x) const {
  std::vector<double> lp(weights_.size());
  for (size_t k = 0; k < weights_.size(); ++k) {
    double s = std::log(weights_[k]);
    for (size_t d = 0; d < params_.size(); ++d) {
      const Param& p = *params_[d];
      if (!p.numeric()) {
        s += std::log(cat_probs_[d][k][static_cast<size_t>(x[d])]);
        continue;
      }
      const double lo = p.internal_low(), hi = p.internal_high(), mu = mus_[d][k], sg = sigmas_[d][k];
      const double log_z = log_normal_mass((lo - mu) / sg, (hi - mu) / sg);
      if (p.step > 0) {
        // The mass of the step's cell around the value.
        const double v = p.from_internal(x[d]);
        const double a = std::max(p.to_internal(v - 0.5 * p.step), lo), b = std::min(p.to_internal(v + 0.5 * p.step), hi);
        s += log_normal_mass((a - mu) / sg, (b - mu) / sg) - log_z;
      } else {
        const double z = (x[d] - mu) / sg;
        s += -0.5 * z * z - std::log(std::sqrt(2 * M_PI)) - (exact_density_ ? std::log(sg) : 0.0) - log_z;
      }
    }
    lp[k] = s;
  }
  return log_sum_exp(lp);
}

std::unique_ptr<Sampler> make_sampler(const SamplerOptions& opts) {
  if (opts.name == "random") return std::make_unique<RandomSampler>();
  if (opts.name == "tpe") return std::make_unique<TpeSampler>(opts);
  if (opts.name == "gp") return make_gp_sampler(opts);
  throw ConfigError(fmt("sampler '", opts.name, "': expected random, tpe or gp"));
}

}  // namespace dsforge::search
