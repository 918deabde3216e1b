#include "dsforge/search/pbt.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "dsforge/core/error.h"

namespace dsforge::search {

void validate(const PbtOptions& o) {
  if (o.population < 2) throw ConfigError(fmt("pbt: --population ", o.population, ": need at least 2 members"));
  if (o.interval < 0) throw ConfigError(fmt("pbt: --interval ", o.interval, " must be positive"));
  if (!(o.exploit_fraction > 0 && o.exploit_fraction <= 0.5))
    throw ConfigError(fmt("pbt: --exploit-fraction ", o.exploit_fraction, ": expected a share in (0, 0.5]"));
  if (!(o.perturb > 0 && o.perturb < 1)) throw ConfigError(fmt("pbt: --perturb ", o.perturb, ": expected a factor in (0, 1)"));
  if (!(o.resample_probability >= 0 && o.resample_probability <= 1))
    throw ConfigError(fmt("pbt: --resample-probability ", o.resample_probability, ": expected a probability"));
}

std::vector<PbtSegment> pbt_first_generation(const SearchSpace& space, const PbtOptions& o) {
  validate(o);
  auto random = make_sampler({.name = "random"});
  std::vector<PbtSegment> out;
  for (int64_t m = 0; m < o.population; ++m) {
    std::mt19937_64 rng(o.seed * 1000003 + static_cast<uint64_t>(m));
    out.push_back({m, 0, -1, random->sample(space, {}, rng), false});
  }
  return out;
}

Params pbt_perturb(const SearchSpace& space, const Params& p, const PbtOptions& o, SplitMix64& rng) {
  auto u = [](SplitMix64& g) { return g.uniform(); };
  Params out;
  for (const Param& q : space.params) {
    if (!space.active(q, out)) continue;
    auto it = p.find(q.name);
    if (it == p.end()) {  // newly enabled by a redrawn parent: a fresh draw
      out[q.name] = q.from_internal(q.internal_low() + u(rng) * (q.internal_high() - q.internal_low()));
      continue;
    }
    if (q.kind == ParamKind::kCategorical) {
      double v = it->second;
      if (u(rng) < o.resample_probability) v = std::floor(u(rng) * static_cast<double>(q.choices.size()));
      out[q.name] = std::min(v, static_cast<double>(q.choices.size() - 1));
      continue;
    }
    const double factor = u(rng) < 0.5 ? 1.0 - o.perturb : 1.0 + o.perturb;
    double v = std::clamp(it->second * factor, q.low, q.high);
    if (q.step > 0 || q.kind == ParamKind::kInt) {
      const double step = q.step > 0 ? q.step : 1.0;
      double r = q.low + std::round((v - q.low) / step) * step;
      // A value too small to move by the factor (an integer of 3, or 0) moves by one step instead.
      if (r == it->second) r += factor > 1 ? step : -step;
      v = std::clamp(r, q.low, q.high);
    }
    out[q.name] = v;
  }
  return out;
}

std::vector<PbtSegment> pbt_next_generation(const SearchSpace& space, const std::vector<TrialRecord>& previous, int64_t generation,
                                            const PbtOptions& o) {
  validate(o);
  const auto P = static_cast<int64_t>(previous.size());
  if (P != o.population) throw Error(fmt("pbt: generation ", generation - 1, " has ", P, " trials for a population of ", o.population));
  auto loss = [&](int64_t m) {
    const TrialRecord& t = previous[static_cast<size_t>(m)];
    return t.state == TrialState::kComplete && std::isfinite(t.value) ? t.value : INFINITY;
  };
  std::vector<int64_t> rank(static_cast<size_t>(P));
  std::iota(rank.begin(), rank.end(), int64_t{0});
  std::stable_sort(rank.begin(), rank.end(), [&](int64_t a, int64_t b) { return loss(a) < loss(b); });  // best first
  const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::floor(o.exploit_fraction * static_cast<double>(P))));
  SplitMix64 rng(o.seed * 1000003 + 7919 * static_cast<uint64_t>(generation));
  std::vector<PbtSegment> out;
  for (int64_t m = 0; m < P; ++m) {
    const TrialRecord& own = previous[static_cast<size_t>(m)];
    out.push_back({m, generation, own.number, own.params, false});
  }
  for (int64_t r = P - k; r < P; ++r) {  // the bottom k, worst last
    const int64_t m = rank[static_cast<size_t>(r)];
    const int64_t donor = rank[rng.below(static_cast<uint64_t>(k))];
    PbtSegment& s = out[static_cast<size_t>(m)];
    s.source = previous[static_cast<size_t>(donor)].number;
    s.params = pbt_perturb(space, previous[static_cast<size_t>(donor)].params, o, rng);
    s.exploited = true;
  }
  return out;
}

}  // namespace dsforge::search
