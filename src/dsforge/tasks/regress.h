// Tabular regression with a small MLP, beside the least-squares and mean-predictor baselines, so a
// reader sees what the network adds (on the diabetes set of Efron et al. 2004, a nearly linear
// problem: little). Features are standardised with the training split's mean and deviation; the MLP
// trains on the standardised target with AdamW and reports MSE / MAE / RMSE / R^2 in target units.
//
//   RegressionData d = read_regression_files("diabetes_data_raw.csv", "diabetes_target.csv");
//   RegressResult r = train_regressor(d, {});
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/eval/text_metrics.h"

namespace dsforge::tasks {

struct RegressionData {
  std::vector<std::vector<double>> x;  // rows of features
  std::vector<double> y;
  std::vector<std::string> header_lines;  // "file:line" of each header row skipped
};
// Features: one row per line, numbers separated by spaces, tabs or commas; targets: one number per
// line (the last column of each row when `target_path` is empty). A first row with a field that is
// not a number is a header and skipped (recorded in header_lines). Errors name file:line.
RegressionData read_regression_files(const std::string& features_path, const std::string& target_path);

// Ordinary least squares with an intercept: coefficients [intercept, w_1..w_d] (float64, QR).
std::vector<double> least_squares_fit(const std::vector<std::vector<double>>& x, const std::vector<double>& y);
std::vector<double> least_squares_predict(const std::vector<double>& coef, const std::vector<std::vector<double>>& x);

struct RegressOptions {
  int64_t hidden = 16;      // two hidden layers of this width, GELU (small: 353 training rows on diabetes)
  int64_t epochs = 100;
  int64_t batch = 32;
  double lr = 3e-3;         // cosine to 0
  double weight_decay = 1e-2;
  double test_fraction = 0.2;  // every 1/test_fraction-th row, after a seeded shuffle
  uint64_t seed = 0;
  std::vector<std::string> overrides;  // run-config overrides for the training loop (tasks/finetune_run.h)
};

struct RegressResult {
  eval::RegressionReport mlp, least_squares, mean;
  int64_t train_rows = 0, test_rows = 0, features = 0;
  double train_seconds = 0;
};
RegressResult train_regressor(const RegressionData& data, const RegressOptions& opt);
std::string regress_json(const RegressResult& r);
std::string regress_table(const RegressResult& r);

}  // namespace dsforge::tasks
