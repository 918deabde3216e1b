#include "dsforge/search/gp.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

namespace dsforge::search {
namespace {

const double kSqrt5 = std::sqrt(5.0);
constexpr double kJitter = 1e-8;
// Weak priors keep the fit sane with few points: lengthscales around 0.5 of the unit cube, signal
// variance around 1 (standardised targets), noise small.
constexpr double kLogLsMean = -0.7, kLogLsSd = 1.5, kLogS2Sd = 1.5, kLogNoiseMean = -6.0, kLogNoiseSd = 2.0;
constexpr double kLogLsMin = -4.6, kLogLsMax = 3.0, kLogNoiseMin = -13.8, kLogNoiseMax = 0.0;

}  // namespace

void GaussianProcess::set_data(const Eigen::MatrixXd& x, const Eigen::VectorXd& y) {
  x_ = x;
  y_ = y;
  if (ls_.size() != x.cols()) ls_ = Eigen::VectorXd::Constant(x.cols(), 0.5);
  factorize();
}

void GaussianProcess::set_hyperparameters(const Eigen::VectorXd& ls, double s2, double noise) {
  ls_ = ls;
  s2_ = s2;
  noise_ = noise;
  if (x_.rows() > 0) factorize();
}

double GaussianProcess::kernel(const Eigen::VectorXd& a, const Eigen::VectorXd& b) const {
  const double r = ((a - b).array() / ls_.array()).matrix().norm();
  return s2_ * (1 + kSqrt5 * r + 5.0 / 3.0 * r * r) * std::exp(-kSqrt5 * r);
}

void GaussianProcess::factorize() {
  const Eigen::Index n = x_.rows();
  Eigen::MatrixXd k(n, n);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j <= i; ++j) k(i, j) = k(j, i) = kernel(x_.row(i).transpose(), x_.row(j).transpose());
  k.diagonal().array() += noise_ + kJitter;
  llt_.compute(k);
  alpha_ = llt_.solve(y_);
}

double GaussianProcess::log_marginal_likelihood() const {
  return -0.5 * y_.dot(alpha_) - llt_.matrixLLT().diagonal().array().log().sum() - 0.5 * static_cast<double>(y_.size()) * std::log(2 * M_PI);
}

double GaussianProcess::fit(int64_t iters) {
  const Eigen::Index n = x_.rows(), d = x_.cols(), p = d + 2;
  if (n < 2) return log_marginal_likelihood();
  // theta = (log l_1..l_D, log s2, log noise)
  Eigen::VectorXd theta(p), m = Eigen::VectorXd::Zero(p), v = Eigen::VectorXd::Zero(p);
  theta.head(d) = ls_.array().log();
  theta(d) = std::log(s2_);
  theta(d + 1) = std::log(noise_);
  const double lr = 0.05, b1 = 0.9, b2 = 0.999;
  Eigen::MatrixXd k(n, n), kf(n, n);
  std::vector<Eigen::MatrixXd> d2(static_cast<size_t>(d), Eigen::MatrixXd(n, n));  // squared differences per input
  for (Eigen::Index a = 0; a < d; ++a)
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) d2[static_cast<size_t>(a)](i, j) = std::pow(x_(i, a) - x_(j, a), 2);
  double value = 0;
  for (int64_t it = 0; it < iters; ++it) {
    const Eigen::ArrayXd inv_l2 = (-2 * theta.head(d)).array().exp();
    const double s2 = std::exp(theta(d)), noise = std::exp(theta(d + 1));
    Eigen::MatrixXd r2 = Eigen::MatrixXd::Zero(n, n);
    for (Eigen::Index a = 0; a < d; ++a) r2 += d2[static_cast<size_t>(a)] * inv_l2(a);
    const Eigen::ArrayXXd r = r2.array().sqrt(), e = (-kSqrt5 * r).exp();
    kf = (s2 * (1 + kSqrt5 * r + 5.0 / 3.0 * r2.array()) * e).matrix();
    k = kf;
    k.diagonal().array() += noise + kJitter;
    Eigen::LLT<Eigen::MatrixXd> llt(k);
    if (llt.info() != Eigen::Success) break;
    const Eigen::VectorXd alpha = llt.solve(y_);
    const Eigen::MatrixXd kinv = llt.solve(Eigen::MatrixXd::Identity(n, n));
    const Eigen::MatrixXd w = alpha * alpha.transpose() - kinv;  // dL/dK = 0.5 W
    value = -0.5 * y_.dot(alpha) - llt.matrixLLT().diagonal().array().log().sum();
    Eigen::VectorXd grad(p);
    // dK/dlog l_a = 5/3 s2 (1 + sqrt5 r) exp(-sqrt5 r) (x_a - x'_a)^2 / l_a^2
    const Eigen::ArrayXXd common = 5.0 / 3.0 * s2 * (1 + kSqrt5 * r) * e;
    for (Eigen::Index a = 0; a < d; ++a)
      grad(a) = 0.5 * (w.array() * common * d2[static_cast<size_t>(a)].array() * inv_l2(a)).sum();
    grad(d) = 0.5 * (w.array() * kf.array()).sum();
    grad(d + 1) = 0.5 * w.trace() * noise;
    // Log-normal priors.
    for (Eigen::Index a = 0; a < d; ++a) {
      value -= 0.5 * std::pow((theta(a) - kLogLsMean) / kLogLsSd, 2);
      grad(a) -= (theta(a) - kLogLsMean) / (kLogLsSd * kLogLsSd);
    }
    value -= 0.5 * std::pow(theta(d) / kLogS2Sd, 2);
    grad(d) -= theta(d) / (kLogS2Sd * kLogS2Sd);
    value -= 0.5 * std::pow((theta(d + 1) - kLogNoiseMean) / kLogNoiseSd, 2);
    grad(d + 1) -= (theta(d + 1) - kLogNoiseMean) / (kLogNoiseSd * kLogNoiseSd);
    // Adam ascent.
    m = b1 * m + (1 - b1) * grad;
    v = b2 * v + (1 - b2) * grad.cwiseProduct(grad);
    const double c1 = 1 - std::pow(b1, static_cast<double>(it + 1)), c2 = 1 - std::pow(b2, static_cast<double>(it + 1));
    theta.array() += lr * (m.array() / c1) / ((v.array() / c2).sqrt() + 1e-8);
    theta.head(d) = theta.head(d).cwiseMax(kLogLsMin).cwiseMin(kLogLsMax);
    theta(d) = std::clamp(theta(d), -6.0, 4.0);
    theta(d + 1) = std::clamp(theta(d + 1), kLogNoiseMin, kLogNoiseMax);
  }
  ls_ = theta.head(d).array().exp();
  s2_ = std::exp(theta(d));
  noise_ = std::exp(theta(d + 1));
  factorize();
  return value;
}

std::pair<double, double> GaussianProcess::predict(const Eigen::VectorXd& x) const {
  const Eigen::Index n = x_.rows();
  Eigen::VectorXd ks(n);
  for (Eigen::Index i = 0; i < n; ++i) ks(i) = kernel(x_.row(i).transpose(), x);
  const double mean = ks.dot(alpha_);
  const Eigen::VectorXd vv = llt_.matrixL().solve(ks);
  return {mean, std::max(s2_ - vv.squaredNorm(), 0.0)};
}

double expected_improvement(double mean, double sd, double best) {
  if (sd <= 1e-12) return std::max(best - mean, 0.0);
  const double z = (best - mean) / sd;
  return (best - mean) * normal_cdf(z) + sd * normal_pdf(z);
}

namespace {

// The unit-cube encoding of a search space: numbers one column each, choices one-hot.
struct Encoder {
  const SearchSpace& space;
  Eigen::Index dims = 0;
  std::vector<Eigen::Index> offset;
  bool continuous = true;  // only unconditional continuous numbers: every point of the cube is valid
  explicit Encoder(const SearchSpace& s) : space(s) {
    for (const auto& p : s.params) {
      offset.push_back(dims);
      dims += p.numeric() ? 1 : static_cast<Eigen::Index>(p.choices.size());
      if (!p.numeric() || p.step > 0 || !p.parent.empty()) continuous = false;
    }
  }
  // The nearest valid point (steps, one choice, inactive parameters at their encoding).
  Eigen::VectorXd snap(const Eigen::VectorXd& x) const {
    return continuous ? Eigen::VectorXd(x.cwiseMax(0.0).cwiseMin(1.0)) : encode(decode(x));
  }
  Eigen::VectorXd encode(const Params& params) const {
    Eigen::VectorXd x = Eigen::VectorXd::Zero(dims);
    for (size_t i = 0; i < space.params.size(); ++i) {
      const Param& p = space.params[i];
      auto it = params.find(p.name);
      if (!p.numeric()) {
        if (it != params.end()) x(offset[i] + static_cast<Eigen::Index>(it->second)) = 1;
        continue;
      }
      x(offset[i]) = it == params.end() ? 0.5
                                        : (p.to_internal(it->second) - p.internal_low()) / (p.internal_high() - p.internal_low());
    }
    return x;
  }
  Params decode(const Eigen::VectorXd& x) const {
    Params out;
    for (size_t i = 0; i < space.params.size(); ++i) {
      const Param& p = space.params[i];
      if (!space.active(p, out)) continue;
      if (p.numeric()) {
        const double u = std::clamp(x(offset[i]), 0.0, 1.0);
        out[p.name] = p.from_internal(p.internal_low() + u * (p.internal_high() - p.internal_low()));
      } else {
        Eigen::Index best = 0;
        x.segment(offset[i], static_cast<Eigen::Index>(p.choices.size())).maxCoeff(&best);
        out[p.name] = static_cast<double>(best);
      }
    }
    return out;
  }
};

class GpSampler : public Sampler {
 public:
  explicit GpSampler(SamplerOptions o) : o_(std::move(o)) {}

  Params sample(const SearchSpace& space, const std::vector<TrialRecord>& trials, std::mt19937_64& rng) override {
    std::vector<const TrialRecord*> done;
    for (const auto& t : trials)
      if (t.state == TrialState::kComplete && std::isfinite(t.value)) done.push_back(&t);
    if (static_cast<int64_t>(done.size()) < std::max<int64_t>(o_.n_startup_trials, 2)) return sample_random(space, rng);
    const Encoder enc(space);
    const Eigen::Index n = static_cast<Eigen::Index>(done.size());
    Eigen::MatrixXd x(n, enc.dims);
    Eigen::VectorXd y(n);
    for (Eigen::Index i = 0; i < n; ++i) {
      x.row(i) = enc.encode(done[static_cast<size_t>(i)]->params).transpose();
      y(i) = done[static_cast<size_t>(i)]->value;
    }
    const double mean = y.mean();
    double sd = std::sqrt((y.array() - mean).square().mean());
    if (!(sd > 1e-12)) sd = 1;
    y = (y.array() - mean) / sd;
    if (!gp_ || gp_->lengthscales().size() != enc.dims) gp_.emplace();  // built in place: an LLT is not copied
    gp_->set_data(x, y);
    gp_->fit(o_.gp_fit_iters);
    const double best = y.minCoeff();
    auto ei = [&](const Eigen::VectorXd& c) {
      auto [m, v] = gp_->predict(c);
      return expected_improvement(m, std::sqrt(v), best);
    };
    auto snap = [&](const Eigen::VectorXd& c) { return enc.snap(c); };
    // Random candidates, then a local search from the best few of them and the best observed points.
    std::uniform_real_distribution<double> u01(0, 1);
    std::vector<std::pair<double, Eigen::VectorXd>> pool;
    for (int64_t i = 0; i < o_.gp_candidates; ++i) {
      Eigen::VectorXd c(enc.dims);
      for (Eigen::Index j = 0; j < enc.dims; ++j) c(j) = u01(rng);
      c = snap(c);
      pool.emplace_back(ei(c), std::move(c));
    }
    std::vector<Eigen::Index> order(static_cast<size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
    std::sort(order.begin(), order.end(), [&](auto a, auto b) { return y(a) < y(b); });
    std::partial_sort(pool.begin(), pool.begin() + std::min<size_t>(5, pool.size()), pool.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<std::pair<double, Eigen::VectorXd>> starts(pool.begin(), pool.begin() + std::min<size_t>(5, pool.size()));
    for (size_t i = 0; i < std::min<size_t>(3, order.size()); ++i) {
      Eigen::VectorXd c = x.row(order[i]).transpose();
      starts.emplace_back(ei(c), c);
    }
    std::normal_distribution<double> nd(0, 1);
    std::pair<double, Eigen::VectorXd> best_c = pool.front();
    for (auto& [val, c] : starts) {
      double step = 0.1;
      for (int it = 0; it < 40; ++it) {
        Eigen::VectorXd trial = c;
        for (Eigen::Index j = 0; j < enc.dims; ++j) trial(j) += step * nd(rng);
        trial = snap(trial);
        const double e = ei(trial);
        if (e > val) {
          val = e;
          c = trial;
        } else if (it % 10 == 9) {
          step *= 0.5;
        }
      }
      if (val > best_c.first) best_c = {val, c};
    }
    return enc.decode(best_c.second);
  }

 private:
  SamplerOptions o_;
  std::optional<GaussianProcess> gp_;  // kept between proposals: its hyperparameters start the next fit
};

}  // namespace

std::unique_ptr<Sampler> make_gp_sampler(const SamplerOptions& opts) { return std::make_unique<GpSampler>(opts); }

}  // namespace dsforge::search
