#include "dsforge/search/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace dsforge::search {

nlohmann::json trials_json(const SearchSpace& space, const std::vector<TrialRecord>& trials) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : trials) {
    nlohmann::json j{{"number", t.number}, {"state", state_name(t.state)}, {"params", space.params_json(t.params)}};
    j["value"] = std::isfinite(t.value) ? nlohmann::json(t.value) : nlohmann::json(nullptr);
    nlohmann::json inter = nlohmann::json::object();
    for (const auto& [s, v] : t.intermediate) inter[std::to_string(s)] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    j["intermediate"] = inter;
    if (!t.error.empty()) j["error"] = t.error;
    out.push_back(j);
  }
  return out;
}

const TrialRecord* best_trial(const std::vector<TrialRecord>& trials) {
  const TrialRecord* best = nullptr;
  for (const auto& t : trials)
    if (t.state == TrialState::kComplete && std::isfinite(t.value) && (!best || t.value < best->value)) best = &t;
  return best;
}

std::map<std::string, double> param_importance(const SearchSpace& space, const std::vector<TrialRecord>& trials) {
  std::map<std::string, double> out;
  for (const auto& p : space.params) {
    std::vector<std::pair<double, double>> xy;  // parameter value, objective
    for (const auto& t : trials)
      if (t.state == TrialState::kComplete && std::isfinite(t.value))
        if (auto it = t.params.find(p.name); it != t.params.end()) xy.emplace_back(it->second, t.value);
    const size_t n = xy.size();
    if (n < 3) continue;
    double mean = 0;
    for (const auto& [x, y] : xy) mean += y / static_cast<double>(n);
    double ss_total = 0;
    for (const auto& [x, y] : xy) ss_total += (y - mean) * (y - mean);
    if (ss_total <= 0) {
      out[p.name] = 0;
      continue;
    }
    // Group labels: the choice, or an equal-count bin of the value's rank.
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return xy[a].first < xy[b].first; });
    std::vector<int64_t> group(n);
    const size_t bins = std::min<size_t>(5, static_cast<size_t>(std::ceil(std::sqrt(static_cast<double>(n)))));
    for (size_t r = 0; r < n; ++r)
      group[order[r]] = p.numeric() ? static_cast<int64_t>(r * bins / n) : static_cast<int64_t>(xy[order[r]].first);
    std::map<int64_t, std::pair<double, double>> sums;  // group -> (sum, count)
    for (size_t i = 0; i < n; ++i) sums[group[i]].first += xy[i].second, sums[group[i]].second += 1;
    double ss_between = 0;
    for (const auto& [g, sc] : sums) ss_between += sc.second * std::pow(sc.first / sc.second - mean, 2);
    out[p.name] = ss_between / ss_total;
  }
  return out;
}

std::string search_report_text(const SearchSpace& space, const std::vector<TrialRecord>& trials) {
  std::string s;
  char buf[512];
  std::map<std::string, int> counts;
  for (const auto& t : trials) counts[state_name(t.state)]++;
  s += "trials: " + std::to_string(trials.size());
  for (const auto& [k, c] : counts) s += ", " + std::to_string(c) + " " + k;
  s += "\n";
  const TrialRecord* best = best_trial(trials);
  if (best) {
    std::snprintf(buf, sizeof buf, "best: trial %lld, value %.6g\n", static_cast<long long>(best->number), best->value);
    s += buf;
    const nlohmann::json best_params = space.params_json(best->params);  // alive through the loop
    for (const auto& [k, v] : best_params.items()) s += "  " + k + " = " + v.dump() + "\n";
  }
  s += "\noptimisation history (value: the final validation loss; pruned trials: their last report)\n";
  s += "  trial  state     value        best so far  params\n";
  double best_so_far = INFINITY;
  for (const auto& t : trials) {
    if (t.state == TrialState::kComplete && std::isfinite(t.value)) best_so_far = std::min(best_so_far, t.value);
    std::string v = "-";
    if (std::isfinite(t.value)) std::snprintf(buf, sizeof buf, "%.6g", t.value), v = buf;
    std::string b = "-";
    if (std::isfinite(best_so_far)) std::snprintf(buf, sizeof buf, "%.6g", best_so_far), b = buf;
    std::string params;
    const nlohmann::json pj = space.params_json(t.params);
    for (const auto& [k, val] : pj.items()) params += (params.empty() ? "" : " ") + k + "=" + val.dump();
    if (t.state == TrialState::kFail) params += "  error: " + t.error.substr(0, 120);
    std::snprintf(buf, sizeof buf, "  %5lld  %-8s  %-11s  %-11s  ", static_cast<long long>(t.number), state_name(t.state), v.c_str(), b.c_str());
    s += buf + params + "\n";
  }
  auto imp = param_importance(space, trials);
  s += "\nparameter importance (first-order fANOVA-lite: share of the objective's variance over complete trials\n"
       "explained by each parameter alone, binned; see search/report.h)\n";
  if (imp.empty()) s += "  (needs at least 3 complete trials)\n";
  double total = 0;
  for (const auto& [k, v] : imp) total += v;
  std::vector<std::pair<double, std::string>> ranked;
  for (const auto& [k, v] : imp) ranked.emplace_back(v, k);
  std::sort(ranked.rbegin(), ranked.rend());
  for (const auto& [v, k] : ranked) {
    const double share = total > 0 ? v / total : 0;
    std::snprintf(buf, sizeof buf, "  %-32s %5.1f%%  (eta^2 %.3f)  ", k.c_str(), 100 * share, v);
    s += buf + std::string(static_cast<size_t>(std::lround(share * 30)), '#') + "\n";
  }
  return s;
}

}  // namespace dsforge::search
