// The continual-learning metrics of Lopez-Paz & Ranzato (2017, "Gradient Episodic Memory", section 5)
// on a matrix of bits per byte (lower is better):
//
//   R[i][j]  bits per byte on domain j's held-out text after learning domain i (row 0: the base model,
//            which learned domain 0); b[j] the same for a randomly initialised model
//   ACC = 1/T sum_j R[T-1][j]                       average final bits per byte
//   BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j])  backward transfer; > 0 is forgetting (bits/byte rose)
//   FWT = 1/(T-1) sum_{j>0} (R[j-1][j] - b[j])       forward transfer; < 0 helps (fewer bits before training on j)
//
// The formulas are the paper's, applied to bits per byte instead of accuracy, so their signs read the
// other way round. Plain C++: the sequence writes them, tests recompute them from the written matrix.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsforge::continual {

struct ForgettingSummary {
  double acc = 0, bwt = 0, fwt = 0;
  double last = 0;  // R[T-1][T-1]: bits per byte on the last domain after learning it
};

// R must be T x T (T >= 2) and b of size T; ConfigError otherwise.
ForgettingSummary summarize_forgetting(const std::vector<std::vector<double>>& r, const std::vector<double>& b);

struct StrategyRun {
  std::string strategy;
  std::vector<std::vector<double>> r;
  ForgettingSummary summary;
};

// The JSON of a sequence: domains, b, and per strategy R and its summary, plus each strategy's forgetting
// (BWT) relative to the "finetune" run when there is one ("bwt_vs_finetune": 1 - BWT / BWT_finetune, the
// share of forgetting removed; "last_vs_finetune": R[T-1][T-1] / finetune's - 1).
nlohmann::ordered_json forgetting_json(const std::vector<std::string>& domains, const std::vector<double>& b,
                                       const std::vector<StrategyRun>& runs);
// A Markdown table of the same: strategy, ACC, BWT, FWT, last-domain bits/byte, and the comparisons.
std::string forgetting_table(const std::vector<std::string>& domains, const std::vector<double>& b,
                             const std::vector<StrategyRun>& runs);

}  // namespace dsforge::continual
