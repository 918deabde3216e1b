// What an adversarial attack is (train/adversarial.h runs it): method, norm, budget, steps, seed. Apart
// from the tensors so that options structs (image training, fine-tuning, robust/) carry it lightly.
#pragma once
#include <cstdint>
#include <string>

namespace dsforge::train {

struct AttackOptions {
  std::string method = "pgd";  // fgsm | pgd
  std::string norm = "linf";   // linf | l2 (per example, over all its coordinates)
  double eps = 0.1;            // the budget: max |delta_i| (linf) or ||delta||_2 (l2)
  double alpha = 0;            // step size; 0 = eps for FGSM, 2.5 eps / steps for PGD
  int64_t steps = 20;          // PGD steps (FGSM takes one)
  bool random_start = true;    // PGD starts from a uniform point of the ball (FGSM never does)
  uint64_t seed = 0;           // the random start
  // "robust attack" and "robust train" print this.
  std::string describe() const;
  // The step size actually taken.
  double step_size() const;
  // FGSM is one step of size eps from the clean input.
  int64_t step_count() const { return method == "fgsm" ? 1 : steps; }
};
// Errors (ConfigError naming `what` and the key) for an unknown method or norm, eps < 0, steps < 1, alpha < 0.
void validate(const AttackOptions& a, const std::string& what = "attack");

}  // namespace dsforge::train
