// dsforge distill: the loss against a hand computation (KL at temperature T times T^2, mixed with the
// hard labels by alpha), a frozen teacher, training through the one trainer with resume, and the
// tokenizer check.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "compress_fixture.h"
#include "dsforge/compress/distill.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/io.h"
#include "test_util.h"
#include "tiny_model.h"

namespace dsforge {
namespace {

// log softmax of row `r` of `z` / T, in double, by loops.
std::vector<double> log_softmax_row(const std::vector<std::vector<double>>& z, size_t r, double T) {
  double mx = -1e300;
  for (double v : z[r]) mx = std::max(mx, v / T);
  double s = 0;
  for (double v : z[r]) s += std::exp(v / T - mx);
  std::vector<double> out;
  for (double v : z[r]) out.push_back(v / T - mx - std::log(s));
  return out;
}

TEST(Distill, LossMatchesHandComputation) {
  const std::vector<std::vector<double>> zs = {{1.0, -0.5, 2.0}, {0.3, 0.3, -1.2}}, zt = {{0.2, 1.5, 0.7}, {-2.0, 0.4, 0.9}};
  const std::vector<int64_t> y = {2, 0};
  const double T = 2.0, alpha = 0.3;
  double kl = 0, ce = 0;
  for (size_t r = 0; r < 2; ++r) {
    const auto ls = log_softmax_row(zs, r, T), lt = log_softmax_row(zt, r, T), l1 = log_softmax_row(zs, r, 1.0);
    for (size_t v = 0; v < 3; ++v) kl += std::exp(lt[v]) * (lt[v] - ls[v]);
    ce -= l1[static_cast<size_t>(y[r])];
  }
  kl /= 2;
  ce /= 2;
  auto flat = [](const std::vector<std::vector<double>>& z) {
    std::vector<float> f;
    for (const auto& row : z)
      for (double v : row) f.push_back(static_cast<float>(v));
    return at::tensor(f).view({1, 2, 3});
  };
  const at::Tensor s = flat(zs).requires_grad_(true), t = flat(zt).requires_grad_(true);
  const auto l = compress::distillation_loss(s, t, at::tensor(y, at::kLong).view({1, 2}), T, alpha);
  EXPECT_NEAR(l.kd.item<double>(), T * T * kl, 1e-6);
  EXPECT_NEAR(l.ce.item<double>(), ce, 1e-6);
  EXPECT_NEAR(l.total.item<double>(), alpha * T * T * kl + (1 - alpha) * ce, 1e-6);
  // The teacher is a constant: no gradient reaches it; the student's gradient is the finite difference.
  l.total.backward();
  EXPECT_FALSE(t.grad().defined());
  const double h = 1e-3;
  at::Tensor sp = flat(zs), sm = flat(zs);
  sp.view({-1})[4] += h;
  sm.view({-1})[4] -= h;
  const double fd = (compress::distillation_loss(sp, t.detach(), at::tensor(y).view({1, 2}), T, alpha).total.item<double>() -
                     compress::distillation_loss(sm, t.detach(), at::tensor(y).view({1, 2}), T, alpha).total.item<double>()) /
                    (2 * h);
  EXPECT_NEAR(s.grad().view({-1})[4].item<double>(), fd, 2e-3);
  // alpha = 0: the plain next-token cross-entropy, whatever the teacher says.
  const auto hard = compress::distillation_loss(s, at::Tensor(), at::tensor(y).view({1, 2}), T, 0.0);
  EXPECT_NEAR(hard.total.item<double>(), ce, 1e-6);
  // Identical logits: no KL at any temperature.
  EXPECT_NEAR(compress::distillation_loss(t, t, at::tensor(y).view({1, 2}), 5.0, 1.0).kd.item<double>(), 0.0, 1e-7);
}

TEST(SlowDistill, StudentTrainsThroughTheTrainerAndResumes) {
  TempDir dir;
  const TinyRun run = make_tiny_run(dir.path, 6);
  compress::DistillOptions o;
  o.teacher_dir = run.model_dir;
  o.student = "nano";
  o.run_config = run.config;
  o.overrides = {"train.max_steps=4", "train.checkpoint_every=2"};
  o.out_dir = path_join(dir.path, "distilled");
  o.temperature = 2.0;
  o.alpha = 0.7;
  o.hidden_weight = 0.1;
  const TensorMap teacher_before = model::load_folder_weights(run.model_dir).tensors;
  const auto r = compress::distill(o);
  EXPECT_EQ(r.steps, 4);
  EXPECT_FALSE(r.interrupted);
  model::CausalLm s = model::load_pretrained(r.model_dir);
  EXPECT_EQ(s->config().vocab_size, model::load_pretrained(run.model_dir)->config().vocab_size);
  EXPECT_EQ(read_file(path_join(r.model_dir, "tokenizer.json")), read_file(path_join(run.model_dir, "tokenizer.json")));
  for (const auto& [n, t] : model::load_folder_weights(run.model_dir).tensors) EXPECT_TRUE(at::equal(t, teacher_before.at(n))) << n;
  const auto j = nlohmann::json::parse(read_file(path_join(o.out_dir, "distill.json")));
  EXPECT_EQ(j["alpha"], 0.7);
  // The metrics carry both losses: the hard-label loss and the KD term (aux).
  const std::string metrics = read_file(path_join(o.out_dir, "metrics.jsonl"));
  EXPECT_NE(metrics.find("\"loss\""), std::string::npos);

  // Longer with the same recipe: continues from step 4's checkpoint.
  o.overrides = {"train.max_steps=6", "train.checkpoint_every=2"};
  const auto r2 = compress::distill(o);
  EXPECT_EQ(r2.steps, 6);
}

TEST(SlowDistill, TokenizerMismatchIsRefused) {
  TempDir dir;
  const TinyRun run = make_tiny_run(dir.path, 2);
  const std::string other = save_tiny_model(path_join(dir.path, "other"), {"completely different text here", "zebra quartz"});
  compress::DistillOptions o;
  o.teacher_dir = run.model_dir;
  o.student = other;
  o.run_config = run.config;
  o.out_dir = path_join(dir.path, "distilled");
  EXPECT_THROW_MSG(compress::distill(o), ConfigError, "tokenizer mismatch");
  EXPECT_FALSE(std::filesystem::exists(path_join(o.out_dir, "model")));
  o.student = "nano";
  o.alpha = 1.5;
  EXPECT_THROW_MSG(compress::distill(o), ConfigError, "--alpha 1.5 must be in [0, 1]");
  o.alpha = 0.5;
  o.teacher_dir = other;  // the shards were made with the run's tokenizer, not this teacher's
  EXPECT_THROW_MSG(compress::distill(o), ConfigError, "tokenizer mismatch");
}

}  // namespace
}  // namespace dsforge
