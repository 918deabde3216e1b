#include "dsforge/search/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "dsforge/core/error.h"
#include "dsforge/report/html_report.h"

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


std::vector<double> steps_spent(const std::vector<TrialRecord>& trials, const std::map<int64_t, int64_t>& start_steps) {
  std::vector<double> out;
  double total = 0;
  for (const auto& t : trials) {
    const auto start = start_steps.find(t.number);
    if (!t.intermediate.empty())
      total += static_cast<double>(t.intermediate.rbegin()->first - (start == start_steps.end() ? 0 : start->second));
    out.push_back(total);
  }
  return out;
}

std::string search_report_html(const SearchSpace& space, const std::vector<TrialRecord>& trials, const std::string& title,
                               const std::string& extra_html, const std::map<int64_t, int64_t>& start_steps) {
  using report::Series;
  std::string body = "<h1>" + report::html_escape(title) + "</h1>";
  int complete = 0, pruned = 0;
  for (const auto& t : trials) complete += t.state == TrialState::kComplete, pruned += t.state == TrialState::kPruned;
  body += "<p class=\"sub\">" + std::to_string(trials.size()) + " trials: " + std::to_string(complete) + " complete, " +
          std::to_string(pruned) + " pruned</p>" + extra_html;

  // History: value per complete trial, best so far.
  Series value{"value", {}, {}}, best{"best so far", {}, {}};
  double best_so_far = INFINITY;
  for (const auto& t : trials)
    if (t.state == TrialState::kComplete && std::isfinite(t.value)) {
      best_so_far = std::min(best_so_far, t.value);
      value.x.push_back(static_cast<double>(t.number));
      value.y.push_back(t.value);
      best.x.push_back(static_cast<double>(t.number));
      best.y.push_back(best_so_far);
    }
  body += "<h2>Optimisation history</h2><div class=\"grid2\">" +
          report::svg_line_chart("objective by trial number (complete trials)", {value, best}, "validation loss", false,
                                 "trial number");
  // The same against compute: training steps spent by all trials so far (a pruned trial counts the
  // steps it ran), what a pruner saves.
  const auto spent = steps_spent(trials, start_steps);
  Series by_compute{"best so far", {}, {}};
  best_so_far = INFINITY;
  for (size_t i = 0; i < trials.size(); ++i)
    if (trials[i].state == TrialState::kComplete && std::isfinite(trials[i].value) && trials[i].value < best_so_far) {
      best_so_far = trials[i].value;
      by_compute.x.push_back(spent[i]);
      by_compute.y.push_back(best_so_far);
    }
  if (!by_compute.x.empty())
    body += report::svg_line_chart("best value against training steps spent (all trials, in order)", {by_compute},
                                   "validation loss", false, "training steps spent by the search");
  // Curves: every trial's intermediate validation losses (the first 40 trials).
  std::vector<Series> curves;
  for (const auto& t : trials) {
    if (t.intermediate.empty() || curves.size() >= 40) continue;
    Series c{fmt("trial ", t.number, t.state == TrialState::kPruned ? " (pruned)" : ""), {}, {}};
    for (const auto& [step, loss] : t.intermediate)
      if (std::isfinite(loss)) c.x.push_back(static_cast<double>(step)), c.y.push_back(loss);
    curves.push_back(c);
  }
  if (!curves.empty())
    body += report::svg_line_chart("validation loss during each trial", curves, "validation loss", false, "training step");
  body += "</div>";

  // Parallel coordinates over the parameters and the value.
  std::vector<report::ParallelAxis> axes;
  for (const auto& p : space.params) {
    report::ParallelAxis a{p.name, p.log, {}};
    if (!p.numeric())
      for (const auto& c : p.choices) a.labels.push_back(c.is_string() ? c.get<std::string>() : c.dump());
    axes.push_back(a);
  }
  axes.push_back({"value", false, {}});
  std::vector<std::vector<double>> lines;
  std::vector<double> shade;
  std::vector<bool> faint;
  std::vector<std::string> names;
  for (const auto& t : trials) {
    if (t.state != TrialState::kComplete && t.state != TrialState::kPruned) continue;
    if (!std::isfinite(t.value)) continue;
    std::vector<double> l;
    for (const auto& p : space.params) {
      auto it = t.params.find(p.name);
      l.push_back(it == t.params.end() ? NAN : it->second);
    }
    l.push_back(t.value);
    lines.push_back(l);
    shade.push_back(t.value);
    faint.push_back(t.state == TrialState::kPruned);
    names.push_back(fmt("trial ", t.number, " (", state_name(t.state), "): ", t.value));
  }
  body += "<h2>Parallel coordinates</h2><p class=\"sub\">one line per trial through its parameter values and its "
          "value; complete trials from dark (lowest value) to light, pruned trials grey (their last report)</p>" +
          report::svg_parallel_coordinates("parameters and value", axes, lines, shade, faint, names);

  // Importance.
  const auto imp = param_importance(space, trials);
  if (!imp.empty()) {
    double total = 0;
    for (const auto& [k, v] : imp) total += v;
    std::vector<std::pair<double, std::string>> ranked;
    for (const auto& [k, v] : imp) ranked.emplace_back(total > 0 ? v / total : 0, k);
    std::sort(ranked.rbegin(), ranked.rend());
    std::vector<std::string> labels;
    std::vector<double> shares;
    for (const auto& [v, k] : ranked) labels.push_back(k), shares.push_back(100 * v);
    body += "<h2>Parameter importance</h2>" +
            report::svg_bar_chart("share of the value's variance explained by each parameter alone (%)", labels, shares, {},
                                  "percent (first-order, binned; see search/report.h)");
  }
  body += "<h2>Report</h2><pre>" + report::html_escape(search_report_text(space, trials)) + "</pre>";
  return report::html_page(title, body);
}

namespace {

// Trials by number, and each member's segments in generation order.
struct Population {
  std::map<int64_t, const TrialRecord*> trial;
  std::map<int64_t, LineageRecord> line;
  std::map<int64_t, std::vector<int64_t>> segments;  // member -> trials
  int64_t members = 0, generations = 0;
};
Population population(const std::vector<TrialRecord>& trials, const std::vector<LineageRecord>& lineage) {
  Population p;
  for (const auto& t : trials) p.trial[t.number] = &t;
  for (const auto& l : lineage) {
    p.line[l.trial] = l;
    p.segments[l.member].push_back(l.trial);
    p.members = std::max(p.members, l.member + 1);
    p.generations = std::max(p.generations, l.generation + 1);
  }
  for (auto& [m, v] : p.segments) std::sort(v.begin(), v.end());
  return p;
}

}  // namespace

std::map<int64_t, int64_t> pbt_start_steps(const std::vector<LineageRecord>& lineage, int64_t interval) {
  std::map<int64_t, int64_t> out;
  for (const auto& l : lineage) out[l.trial] = l.generation * interval;
  return out;
}

nlohmann::json pbt_json(const SearchSpace& space, const std::vector<TrialRecord>& trials, const std::vector<LineageRecord>& lineage,
                        int64_t interval) {
  const Population p = population(trials, lineage);
  nlohmann::json members = nlohmann::json::array();
  int64_t steps = 0, best_member = -1;
  double best = INFINITY;
  for (const auto& [m, segs] : p.segments) {
    nlohmann::json schedule = nlohmann::json::array();
    double last = NAN;
    for (const int64_t n : segs) {
      const LineageRecord& l = p.line.at(n);
      auto it = p.trial.find(n);
      if (it == p.trial.end()) continue;
      const TrialRecord& t = *it->second;
      const int64_t start = l.generation * interval;
      const int64_t end = t.intermediate.empty() ? start : t.intermediate.rbegin()->first;
      steps += std::max<int64_t>(0, end - start);
      nlohmann::json seg = {{"generation", l.generation}, {"trial", n}, {"steps", {start, end}}, {"params", space.params_json(t.params)},
                            {"state", state_name(t.state)}, {"value", std::isfinite(t.value) ? nlohmann::json(t.value) : nlohmann::json()}};
      if (l.source >= 0) seg[l.exploited ? "exploited" : "continued"] = l.source;
      schedule.push_back(seg);
      if (t.state == TrialState::kComplete) last = t.value;
    }
    if (std::isfinite(last) && last < best) best = last, best_member = m;
    members.push_back({{"member", m}, {"final_value", std::isfinite(last) ? nlohmann::json(last) : nlohmann::json()}, {"schedule", schedule}});
  }
  return {{"population", p.members}, {"generations", p.generations}, {"interval", interval}, {"training_steps", steps},
          {"best_member", best_member}, {"best_value", std::isfinite(best) ? nlohmann::json(best) : nlohmann::json()}, {"members", members}};
}

std::string pbt_report_html(const SearchSpace& space, const std::vector<TrialRecord>& trials, const std::vector<LineageRecord>& lineage,
                            int64_t interval) {
  using report::Series;
  const Population p = population(trials, lineage);
  std::string body = fmt("<h2>Population-based training</h2><p class=\"sub\">", p.members, " members, ", p.generations,
                         " generations of ", interval,
                         " steps; after each generation the bottom members copy a top member's weights and optimizer state "
                         "and perturb its hyperparameters</p><div class=\"grid2\">");
  // Each member's validation loss over its whole training, through the members it copied.
  std::vector<Series> losses;
  for (const auto& [m, segs] : p.segments) {
    Series s{fmt("member ", m), {}, {}};
    for (const int64_t n : segs)
      if (auto it = p.trial.find(n); it != p.trial.end())
        for (const auto& [step, v] : it->second->intermediate)
          if (std::isfinite(v)) s.x.push_back(static_cast<double>(step)), s.y.push_back(v);
    losses.push_back(s);
  }
  body += report::svg_line_chart("validation loss of each member", losses, "validation loss", false, "training step");
  // The schedule of each numerical hyperparameter: constant within a segment, changing where a member exploits.
  for (const auto& q : space.params) {
    std::vector<Series> lines;
    for (const auto& [m, segs] : p.segments) {
      Series s{fmt("member ", m), {}, {}};
      for (const int64_t n : segs) {
        auto it = p.trial.find(n);
        if (it == p.trial.end()) continue;
        auto v = it->second->params.find(q.name);
        if (v == it->second->params.end()) continue;
        const double start = static_cast<double>(p.line.at(n).generation * interval);
        s.x.push_back(start), s.y.push_back(v->second);
        s.x.push_back(start + static_cast<double>(interval)), s.y.push_back(v->second);
      }
      lines.push_back(s);
    }
    body += report::svg_line_chart(fmt(q.name, " schedule", q.numeric() ? "" : " (choice index)"), lines, q.name, q.log && q.numeric(),
                                   "training step");
  }
  body += "</div><h3>Lineage</h3><p class=\"sub\">each cell: the member's validation loss at the end of the generation; "
          "&larr; m: it started the generation from member m's checkpoint (exploit) with perturbed hyperparameters</p><table><tr><th>generation</th>";
  for (int64_t m = 0; m < p.members; ++m) body += fmt("<th>member ", m, "</th>");
  body += "</tr>";
  for (int64_t g = 0; g < p.generations; ++g) {
    body += fmt("<tr><td>", g, "</td>");
    for (int64_t m = 0; m < p.members; ++m) {
      const int64_t n = g * p.members + m;
      auto it = p.trial.find(n);
      auto l = p.line.find(n);
      std::string cell = it != p.trial.end() && std::isfinite(it->second->value) ? fmt(std::round(it->second->value * 10000) / 10000) : "";
      if (l != p.line.end() && l->second.exploited && p.line.count(l->second.source))
        cell += fmt(" &larr; m", p.line.at(l->second.source).member);
      body += "<td>" + cell + "</td>";
    }
    body += "</tr>";
  }
  return body + "</table>\n";
}

}  // namespace dsforge::search
