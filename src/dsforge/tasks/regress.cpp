#include "dsforge/tasks/regress.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/eval/metrics_files.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/tasks/finetune_run.h"
#include "dsforge/train/optim.h"

namespace dsforge::tasks {
namespace {

std::vector<double> parse_numbers(const std::string& line, const std::string& path, size_t line_no) {
  std::vector<double> out;
  const char* p = line.c_str();
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\r') ++p;
    if (!*p) break;
    char* end = nullptr;
    const double v = std::strtod(p, &end);
    if (end == p) throw DataError(fmt(path, ":", line_no, ": '", std::string(p).substr(0, 20), "' is not a number"));
    out.push_back(v);
    p = end;
  }
  return out;
}

at::Tensor to_tensor(const std::vector<std::vector<double>>& rows) {
  const auto n = static_cast<int64_t>(rows.size()), d = static_cast<int64_t>(rows.at(0).size());
  at::Tensor t = at::empty({n, d}, at::kDouble);
  double* p = t.data_ptr<double>();
  for (const auto& r : rows) p = std::copy(r.begin(), r.end(), p);
  return t;
}

}  // namespace

// Whether a line is a header: its first row, when a field of it is not a number (column names, or
// scikit-learn's "178,13,class_0,class_1,class_2" count line).
static bool is_header(const std::vector<std::string>& lines, size_t i) {
  for (size_t k = 0; k < i; ++k)
    if (lines[k].find_first_not_of(" \t\r") != std::string::npos) return false;  // not the first row
  try {
    parse_numbers(lines[i], "", 0);
    return false;
  } catch (const DataError&) {
    return true;
  }
}

RegressionData read_regression_files(const std::string& features_path, const std::string& target_path) {
  RegressionData d;
  const auto lines = eval::read_lines(features_path);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    if (is_header(lines, i)) {
      d.header_lines.push_back(features_path + ":" + std::to_string(i + 1));
      continue;
    }
    auto row = parse_numbers(lines[i], features_path, i + 1);
    if (!d.x.empty() && row.size() != d.x[0].size() + (target_path.empty() ? 1 : 0))
      throw DataError(fmt(features_path, ":", i + 1, ": ", row.size(), " columns, expected ",
                          d.x[0].size() + (target_path.empty() ? 1 : 0), " like line 1"));
    if (target_path.empty()) {
      if (row.size() < 2) throw DataError(fmt(features_path, ":", i + 1, ": need features and a target (the last column)"));
      d.y.push_back(row.back());
      row.pop_back();
    }
    d.x.push_back(std::move(row));
  }
  if (d.x.empty()) throw DataError(fmt(features_path, ": no rows"));
  if (!target_path.empty()) {
    const auto t = eval::read_lines(target_path);
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i].find_first_not_of(" \t\r") == std::string::npos) continue;
      if (is_header(t, i)) {
        d.header_lines.push_back(target_path + ":" + std::to_string(i + 1));
        continue;
      }
      const auto v = parse_numbers(t[i], target_path, i + 1);
      if (v.size() != 1) throw DataError(fmt(target_path, ":", i + 1, ": expected one number, found ", v.size()));
      d.y.push_back(v[0]);
    }
    if (d.y.size() != d.x.size())
      throw DataError(fmt(target_path, ": ", d.y.size(), " targets for ", d.x.size(), " rows of ", features_path));
  }
  return d;
}

std::vector<double> least_squares_fit(const std::vector<std::vector<double>>& x, const std::vector<double>& y) {
  at::Tensor X = to_tensor(x);
  X = at::cat({at::ones({X.size(0), 1}, at::kDouble), X}, 1);
  at::Tensor Y = at::tensor(y, at::kDouble).unsqueeze(1);
  // Normal equations through a QR factorisation: R w = Q^T y.
  auto [q, r] = at::linalg_qr(X);
  at::Tensor w = at::linalg_solve_triangular(r, q.t().matmul(Y), /*upper=*/true).squeeze(1).contiguous();
  return std::vector<double>(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
}

std::vector<double> least_squares_predict(const std::vector<double>& coef, const std::vector<std::vector<double>>& x) {
  std::vector<double> out;
  for (const auto& r : x) {
    double v = coef[0];
    for (size_t j = 0; j < r.size(); ++j) v += coef[j + 1] * r[j];
    out.push_back(v);
  }
  return out;
}

namespace {

// Two hidden GELU layers and a linear output.
struct MlpModule : torch::nn::Module {
  MlpModule(int64_t d, int64_t h) {
    l1 = register_module("l1", torch::nn::Linear(d, h));
    l2 = register_module("l2", torch::nn::Linear(h, h));
    l3 = register_module("l3", torch::nn::Linear(h, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return l3(at::gelu(l2(at::gelu(l1(x))))).squeeze(1); }
  torch::nn::Linear l1{nullptr}, l2{nullptr}, l3{nullptr};
};

// Regression as a task of the one training loop: mean squared error on standardised rows.
class RegressTask : public train::TrainTask {
 public:
  RegressTask(std::shared_ptr<MlpModule> m, at::Tensor x, at::Tensor y, uint64_t seed, std::string identity)
      : m_(std::move(m)), x_(std::move(x)), y_(std::move(y)), identity_(std::move(identity)), stream_(x_.size(0), seed) {}
  torch::nn::Module& module() override { return *m_; }
  void init_weights(double, uint64_t seed) override {  // PyTorch's default bound, 1/sqrt(fan_in), from the seed
    at::NoGradGuard ng;
    auto gen = at::detail::createCPUGenerator(seed);
    for (auto* l : {&m_->l1, &m_->l2, &m_->l3}) {
      const double bound = 1.0 / std::sqrt(static_cast<double>((*l)->weight.size(1)));
      (*l)->weight.uniform_(-bound, bound, gen);
      (*l)->bias.zero_();
    }
  }
  std::string describe() const override { return fmt(model::count_parameters(*m_), " parameters, ", x_.size(0), " rows"); }
  std::string config_json() const override {
    return nlohmann::json{{"model_type", "mlp_regressor"}, {"features", x_.size(1)}, {"hidden", m_->l1->weight.size(0)}}.dump();
  }
  std::string identity() const override { return identity_; }
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t, c10::Device device) override {
    at::Tensor idx = at::tensor(stream_.next(rows, first, count), at::kLong);
    at::Tensor loss = at::mse_loss(m_->forward(x_.index_select(0, idx).to(device)), y_.index_select(0, idx).to(device));
    return {loss, loss, at::Tensor()};
  }
  nlohmann::json data_position() const override { return stream_.position(); }
  void set_data_position(const nlohmann::json& p) override { stream_.set_position(p); }

 private:
  std::shared_ptr<MlpModule> m_;
  at::Tensor x_, y_;
  std::string identity_;
  ExampleStream stream_;
};

}  // namespace

RegressResult train_regressor(const RegressionData& data, const RegressOptions& opt) {
  const size_t n = data.x.size();
  if (n < 10) throw DataError(fmt("regression: ", n, " rows; need at least 10"));
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  shuffle_in_place(order, opt.seed);
  const auto every = static_cast<size_t>(std::max(2.0, std::round(1.0 / opt.test_fraction)));
  RegressionData train, test;
  for (size_t k = 0; k < n; ++k) {
    RegressionData& to = k % every == 0 ? test : train;
    to.x.push_back(data.x[order[k]]);
    to.y.push_back(data.y[order[k]]);
  }
  RegressResult r;
  r.train_rows = static_cast<int64_t>(train.x.size());
  r.test_rows = static_cast<int64_t>(test.x.size());
  r.features = static_cast<int64_t>(data.x[0].size());

  // Baselines: the training mean, and least squares.
  const double mean = std::accumulate(train.y.begin(), train.y.end(), 0.0) / static_cast<double>(train.y.size());
  r.mean = eval::regression_report(std::vector<double>(test.y.size(), mean), test.y);
  r.least_squares = eval::regression_report(least_squares_predict(least_squares_fit(train.x, train.y), test.x), test.y);

  // The MLP on standardised features and target.
  at::Tensor xtr = to_tensor(train.x), xte = to_tensor(test.x);
  const at::Tensor mu = xtr.mean(0), sd = xtr.std(0).clamp_min(1e-12);
  xtr = ((xtr - mu) / sd).to(at::kFloat);
  xte = ((xte - mu) / sd).to(at::kFloat);
  at::Tensor ytr = at::tensor(train.y, at::kDouble);
  const double ymu = ytr.mean().item<double>(), ysd = std::max(ytr.std().item<double>(), 1e-12);
  ytr = ((ytr - ymu) / ysd).to(at::kFloat);

  const int64_t d = r.features;
  auto mlp = std::make_shared<MlpModule>(d, opt.hidden);
  FinetuneSchedule sched = finetune_schedule(xtr.size(0), opt);
  sched.schedule = "cosine";  // to 0, no warmup, no clipping: what a small MLP on standardised data wants
  sched.warmup_fraction = 0;
  sched.grad_clip = 0;
  RegressTask task(mlp, xtr, ytr, opt.seed + 1, fmt("regress|", r.train_rows, "|", d, "|", opt.hidden));
  const auto t0 = std::chrono::steady_clock::now();
  run_finetune(task, finetune_run_config(sched, opt.overrides, ""), (sched.examples + opt.batch - 1) / opt.batch, "regress");
  r.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto forward = [&](const at::Tensor& x) { return mlp->forward(x); };
  at::NoGradGuard ng;
  at::Tensor pred = (forward(xte).to(at::kDouble) * ysd + ymu).contiguous();
  r.mlp = eval::regression_report(std::vector<double>(pred.data_ptr<double>(), pred.data_ptr<double>() + pred.numel()), test.y);
  return r;
}

std::string regress_json(const RegressResult& r) {
  auto rep = [](const eval::RegressionReport& m) {
    return nlohmann::ordered_json{{"mse", m.mse}, {"mae", m.mae}, {"rmse", m.rmse}, {"r2", m.r2}};
  };
  nlohmann::ordered_json j = {{"train_rows", r.train_rows}, {"test_rows", r.test_rows}, {"features", r.features},
                              {"mlp", rep(r.mlp)}, {"baseline_least_squares", rep(r.least_squares)},
                              {"baseline_mean", rep(r.mean)}, {"train_seconds", r.train_seconds}};
  return j.dump(2);
}

std::string regress_table(const RegressResult& r) {
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "test rows %lld (train %lld, %lld features)\n"
                "                        MSE        MAE       RMSE       R^2\n"
                "MLP              %10.2f %10.2f %10.2f %9.4f\n"
                "least squares    %10.2f %10.2f %10.2f %9.4f\n"
                "mean predictor   %10.2f %10.2f %10.2f %9.4f\n",
                static_cast<long long>(r.test_rows), static_cast<long long>(r.train_rows), static_cast<long long>(r.features),
                r.mlp.mse, r.mlp.mae, r.mlp.rmse, r.mlp.r2, r.least_squares.mse, r.least_squares.mae, r.least_squares.rmse,
                r.least_squares.r2, r.mean.mse, r.mean.mae, r.mean.rmse, r.mean.r2);
  return buf;
}

}  // namespace dsforge::tasks
