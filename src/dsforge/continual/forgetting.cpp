#include "dsforge/continual/forgetting.h"

#include <cmath>

#include "dsforge/core/error.h"
#include "dsforge/core/text.h"

namespace dsforge::continual {
namespace {

std::string num(double v, int prec = 4) {
  return std::isfinite(v) ? fixed_digits(v, prec) : "-";
}

const StrategyRun* finetune_run(const std::vector<StrategyRun>& runs) {
  for (const auto& r : runs)
    if (r.strategy == "finetune") return &r;
  return nullptr;
}

double bwt_reduction(const StrategyRun& s, const StrategyRun* ft) {
  return ft && ft->summary.bwt > 0 ? 1.0 - s.summary.bwt / ft->summary.bwt : NAN;
}
double last_ratio(const StrategyRun& s, const StrategyRun* ft) { return ft ? s.summary.last / ft->summary.last - 1.0 : NAN; }

}  // namespace

ForgettingSummary summarize_forgetting(const std::vector<std::vector<double>>& r, const std::vector<double>& b) {
  const size_t t = r.size();
  if (t < 2) throw ConfigError(fmt("forgetting: the matrix has ", t, " rows; need at least 2 domains"));
  for (size_t i = 0; i < t; ++i)
    if (r[i].size() != t) throw ConfigError(fmt("forgetting: row ", i, " has ", r[i].size(), " values, expected ", t));
  if (b.size() != t) throw ConfigError(fmt("forgetting: ", b.size(), " baseline values, expected ", t));
  ForgettingSummary s;
  for (size_t j = 0; j < t; ++j) s.acc += r[t - 1][j] / static_cast<double>(t);
  for (size_t j = 0; j + 1 < t; ++j) s.bwt += (r[t - 1][j] - r[j][j]) / static_cast<double>(t - 1);
  for (size_t j = 1; j < t; ++j) s.fwt += (r[j - 1][j] - b[j]) / static_cast<double>(t - 1);
  s.last = r[t - 1][t - 1];
  return s;
}

nlohmann::ordered_json forgetting_json(const std::vector<std::string>& domains, const std::vector<double>& b,
                                       const std::vector<StrategyRun>& runs) {
  const StrategyRun* ft = finetune_run(runs);
  nlohmann::ordered_json j;
  j["metric"] = "bits_per_byte";
  j["domains"] = domains;
  j["random_init"] = b;
  j["runs"] = nlohmann::ordered_json::array();
  for (const auto& s : runs) {
    nlohmann::ordered_json e;
    e["strategy"] = s.strategy;
    e["R"] = s.r;
    e["acc"] = s.summary.acc;
    e["bwt"] = s.summary.bwt;
    e["fwt"] = s.summary.fwt;
    e["last"] = s.summary.last;
    if (ft) {
      const double red = bwt_reduction(s, ft), lr = last_ratio(s, ft);
      e["bwt_vs_finetune"] = std::isfinite(red) ? nlohmann::ordered_json(red) : nlohmann::ordered_json(nullptr);
      e["last_vs_finetune"] = lr;
    }
    j["runs"].push_back(e);
  }
  return j;
}

std::string forgetting_table(const std::vector<std::string>& domains, const std::vector<double>& b,
                             const std::vector<StrategyRun>& runs) {
  const StrategyRun* ft = finetune_run(runs);
  std::string out = "| strategy | ACC (bits/byte) | BWT (forgetting) | FWT | last domain | forgetting removed vs finetune | last domain vs finetune |\n";
  out += "|---|---|---|---|---|---|---|\n";
  for (const auto& s : runs) {
    const double red = bwt_reduction(s, ft), lr = last_ratio(s, ft);
    out += fmt("| ", s.strategy, " | ", num(s.summary.acc), " | ", num(s.summary.bwt), " | ", num(s.summary.fwt), " | ",
               num(s.summary.last), " | ", std::isfinite(red) ? num(100 * red, 1) + "%" : "-", " | ",
               std::isfinite(lr) ? (lr >= 0 ? "+" : "") + num(100 * lr, 2) + "%" : "-", " |\n");
  }
  // Each strategy's matrix.
  for (const auto& s : runs) {
    out += fmt("\nR for ", s.strategy, " (row i: after learning domain i; bits per byte)\n\n| after \\ on |");
    for (const auto& d : domains) out += " " + d + " |";
    out += "\n|---|";
    for (size_t j = 0; j < domains.size(); ++j) out += "---|";
    out += "\n";
    for (size_t i = 0; i < s.r.size(); ++i) {
      out += "| " + domains[i] + " |";
      for (double v : s.r[i]) out += " " + num(v) + " |";
      out += "\n";
    }
  }
  out += "\nRandomly initialised model (b, for FWT):";
  for (size_t j = 0; j < b.size(); ++j) out += fmt(j ? ", " : " ", domains[j], " ", num(b[j]));
  out += "\n";
  return out;
}

}  // namespace dsforge::continual
