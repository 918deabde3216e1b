// Gaussian-process regression for the GP-EI sampler (search/sampler.h, name "gp").
//
// Inputs are encoded on the unit cube (numbers by their internal coordinate scaled to [0, 1], choices
// one-hot), targets standardised. Kernel: Matern-5/2 with one lengthscale per input (ARD),
//   k(x, x') = s2 (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r),  r^2 = sum_i (x_i - x'_i)^2 / l_i^2,
// plus a noise variance on the diagonal (Rasmussen & Williams 2006, eq. 4.17 and §5.4). The
// hyperparameters (log l_i, log s2, log noise) maximise the log marginal likelihood plus weak
// log-normal priors, by Adam on its analytic gradient (R&W eq. 5.9), warm-started from the last fit.
//
//   GaussianProcess gp;
//   gp.set_data(X, y);                   // X: n x D, y: n
//   gp.fit(60);                          // or set_hyperparameters(...) for a fixed kernel
//   auto [mean, var] = gp.predict(x);    // of the latent function, in y's units
//   double ei = expected_improvement(mean, std::sqrt(var), y.minCoeff());
//
// Free of libtorch (Eigen only).
#pragma once
#include <Eigen/Dense>
#include <memory>
#include <utility>

#include "dsforge/search/sampler.h"

namespace dsforge::search {

class GaussianProcess {
 public:
  void set_data(const Eigen::MatrixXd& x, const Eigen::VectorXd& y);
  // Lengthscales (D), signal variance, noise variance.
  void set_hyperparameters(const Eigen::VectorXd& lengthscales, double signal_var, double noise_var);
  // `iters` Adam steps on the log marginal likelihood (with the priors); returns the final value.
  double fit(int64_t iters);
  double log_marginal_likelihood() const;  // without the priors, for the current hyperparameters
  std::pair<double, double> predict(const Eigen::VectorXd& x) const;  // mean, variance (>= 0)

  const Eigen::VectorXd& lengthscales() const { return ls_; }
  double signal_var() const { return s2_; }
  double noise_var() const { return noise_; }

 private:
  void factorize();
  double kernel(const Eigen::VectorXd& a, const Eigen::VectorXd& b) const;
  Eigen::MatrixXd x_;
  Eigen::VectorXd y_, ls_, alpha_;
  double s2_ = 1.0, noise_ = 1e-2;
  Eigen::LLT<Eigen::MatrixXd> llt_;
};

// EI of a minimisation at a point with posterior mean `mean` and standard deviation `sd` against the
// best value `best`: (best - mean) Phi(z) + sd phi(z), z = (best - mean) / sd (Jones et al. 1998, eq. 15).
double expected_improvement(double mean, double sd, double best);

std::unique_ptr<Sampler> make_gp_sampler(const SamplerOptions& opts);

}  // namespace dsforge::search
