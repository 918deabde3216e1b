#include "dsforge/search/pruner.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "dsforge/core/error.h"

namespace dsforge::search {
namespace {

class NoPruner : public Pruner {
 public:
  bool should_prune(const std::vector<TrialRecord>&, const TrialRecord&) const override { return false; }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

class MedianPruner : public Pruner {
 public:
  explicit MedianPruner(PrunerOptions o) : o_(std::move(o)) {}
  bool should_prune(const std::vector<TrialRecord>& trials, const TrialRecord& cur) const override {
    if (cur.intermediate.empty()) return false;
    const auto [step, last] = *cur.intermediate.rbegin();
    if (step < o_.n_warmup_steps) return false;
    std::vector<double> at_step;
    int64_t n_complete = 0;
    for (const auto& t : trials) {
      if (t.state != TrialState::kComplete || t.number == cur.number) continue;
      ++n_complete;
      if (auto it = t.intermediate.find(step); it != t.intermediate.end() && std::isfinite(it->second))
        at_step.push_back(it->second);
    }
    if (n_complete < o_.n_startup_trials || static_cast<int64_t>(at_step.size()) < o_.n_min_trials) return false;
    double best = std::numeric_limits<double>::infinity();
    for (const auto& [s, v] : cur.intermediate)
      if (std::isfinite(v)) best = std::min(best, v);
    return best > median(at_step);
  }

 private:
  PrunerOptions o_;
};

// The value a trial recorded at a rung: its first report at or after the rung's step.
const std::pair<const int64_t, double>* rung_report(const TrialRecord& t, int64_t rung_step) {
  auto it = t.intermediate.lower_bound(rung_step);
  return it == t.intermediate.end() ? nullptr : &*it;
}

class AshaPruner : public Pruner {
 public:
  explicit AshaPruner(PrunerOptions o) : o_(std::move(o)) {
    if (o_.reduction_factor == 0) o_.reduction_factor = o_.name == "hyperband" ? 3 : 4;
    if (o_.min_resource < 1 || o_.reduction_factor < 2)
      throw ConfigError(fmt("pruner ", o_.name, ": min_resource must be >= 1 and reduction_factor >= 2"));
  }
  bool should_prune(const std::vector<TrialRecord>& trials, const TrialRecord& cur) const override {
    if (cur.intermediate.empty()) return false;
    const int64_t step = cur.intermediate.rbegin()->first;
    const int64_t bracket = hyperband_bracket(o_, cur.number);
    const int64_t rate = bracket >= 0 ? bracket : o_.min_early_stopping_rate;
    for (int64_t rung = 0;; ++rung) {
      const double rs = static_cast<double>(o_.min_resource) * std::pow(static_cast<double>(o_.reduction_factor), static_cast<double>(rung + rate));
      if (rs > static_cast<double>(step) || rs > 9e18) return false;
      const auto rung_step = static_cast<int64_t>(rs);
      const auto* mine = rung_report(cur, rung_step);
      if (mine->first != step) continue;  // reached this rung at an earlier report: already promoted
      // Every trial of the same bracket that reached the rung competes, this one included.
      std::vector<double> competing{mine->second};
      for (const auto& t : trials) {
        if (t.number == cur.number || hyperband_bracket(o_, t.number) != bracket) continue;
        if (const auto* r = rung_report(t, rung_step); r && std::isfinite(r->second)) competing.push_back(r->second);
      }
      std::sort(competing.begin(), competing.end());
      int64_t idx = static_cast<int64_t>(competing.size()) / o_.reduction_factor - 1;
      if (idx < 0) idx = 0;  // fewer than rf have reached the rung: only the best continues
      if (!(mine->second <= competing[static_cast<size_t>(idx)])) return true;
    }
  }

 private:
  PrunerOptions o_;
};

}  // namespace

int64_t hyperband_bracket(const PrunerOptions& o, int64_t trial_number) {
  if (o.name != "hyperband") return -1;
  const double rf = o.reduction_factor > 0 ? static_cast<double>(o.reduction_factor) : 3.0;
  const int64_t s_max = std::max<int64_t>(
      0, static_cast<int64_t>(std::floor(std::log(static_cast<double>(std::max(o.max_resource, o.min_resource)) /
                                                  static_cast<double>(o.min_resource)) / std::log(rf) + 1e-9)));
  // Bracket b (min_early_stopping_rate b) is Hyperband's bracket s = s_max - b, which starts
  // n_s = ceil((s_max + 1) / (s + 1) * rf^s) configurations: the weight of drawing it.
  std::vector<int64_t> weights;
  int64_t total = 0;
  for (int64_t b = 0; b <= s_max; ++b) {
    const int64_t s = s_max - b;
    weights.push_back(static_cast<int64_t>(std::ceil(static_cast<double>(s_max + 1) / static_cast<double>(s + 1) * std::pow(rf, static_cast<double>(s)))));
    total += weights.back();
  }
  // A fixed hash of the trial number (Knuth's multiplicative), so every worker agrees.
  int64_t h = static_cast<int64_t>((static_cast<uint64_t>(trial_number) * 2654435761u) % 4294967296u % static_cast<uint64_t>(total));
  for (int64_t b = 0; b <= s_max; ++b) {
    if (h < weights[static_cast<size_t>(b)]) return b;
    h -= weights[static_cast<size_t>(b)];
  }
  return s_max;
}

std::unique_ptr<Pruner> make_pruner(const PrunerOptions& o) {
  if (o.name == "none") return std::make_unique<NoPruner>();
  if (o.name == "median") return std::make_unique<MedianPruner>(o);
  if (o.name == "asha" || o.name == "hyperband") return std::make_unique<AshaPruner>(o);
  throw ConfigError(fmt("pruner '", o.name, "': expected none, median, asha or hyperband"));
}

}  // namespace dsforge::search
