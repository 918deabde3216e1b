// Fine-tuning a classification head end to end on a synthetic task whose label is decided by one
// keyword among filler words: a tiny model must learn it far above the majority-class baseline.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <cmath>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/corpus.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/model/io.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/tasks/regress.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"

using namespace dsforge;

namespace {
tasks::ClassifyData keyword_task(size_t n_train, size_t n_test) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> classes = {
      {"animal", {"cat", "dog", "horse"}}, {"plant", {"tree", "rose", "grass"}}, {"tool", {"hammer", "saw", "drill"}}};
  const std::vector<std::string> filler = {"the", "a", "big", "small", "old", "new", "red", "blue", "near", "far", "very", "quite"};
  std::mt19937 rng(7);
  tasks::ClassifyData d;
  d.name = "keywords";
  for (size_t i = 0; i < n_train + n_test; ++i) {
    const auto& [label, keys] = classes[i % 3];
    std::vector<std::string> words;
    for (int k = 0; k < 6; ++k) words.push_back(filler[rng() % filler.size()]);
    words.insert(words.begin() + static_cast<long>(rng() % 7), keys[rng() % 3]);
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    (i < n_train ? d.train : d.test).push_back({text, label});
  }
  return d;
}
}  // namespace

TEST(Finetune, ClassificationHeadLearnsAKeywordTask) {
  TempDir dir;
  tasks::ClassifyData data = keyword_task(300, 90);
  std::vector<std::string> docs;
  for (const auto& e : data.train) docs.push_back(e.text);
  tok::BpeTokenizer::TrainOptions to;
  to.vocab_size = 300;
  auto tok = tok::BpeTokenizer::train(docs, to);
  model::ModelConfig mc = model::model_config_from_preset("nano");
  mc.vocab_size = tok.vocab_size();
  model::CausalLm m = model::build_model(mc);
  m->init_weights(0.02, 1);
  const std::string model_dir = path_join(dir.path, "model");
  model::save_pretrained(model_dir, *m);
  tok.save(path_join(model_dir, "tokenizer.json"));

  tasks::FinetuneOptions opt;
  opt.epochs = 6;
  opt.batch = 16;
  opt.lr = 2e-3;
  const std::string out = path_join(dir.path, "out");
  tasks::FinetuneResult r = tasks::finetune_classifier(model_dir, data, opt, out);
  EXPECT_NEAR(r.majority.accuracy, 1.0 / 3, 1e-9);
  EXPECT_GT(r.model.accuracy, 0.9) << tasks::finetune_table(r);
  EXPECT_LT(r.epoch_losses.back(), r.epoch_losses.front());
  auto j = nlohmann::json::parse(read_file(path_join(out, "finetune.json")));
  EXPECT_EQ(j["classes"], 3);
  EXPECT_TRUE(file_exists(path_join(out, "classifier.safetensors")));
}

TEST(Finetune, TsvAndWordnetInputs) {
  TempDir dir;
  const std::string tsv = path_join(dir.path, "d.tsv");
  write_file_atomic(tsv, "sentence\tlabel\ngood film \t1\nbad film\t0\n");
  auto ex = tasks::read_tsv_examples(tsv);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].text, "good film ");
  EXPECT_EQ(ex[0].label, "1");
  write_file_atomic(tsv, "no tab here\n");
  EXPECT_THROW_MSG(tasks::read_tsv_examples(tsv), DataError, "d.tsv:1: expected 'text<TAB>label'");
  EXPECT_EQ(data::wordnet_lexname(5), "noun.animal");
  EXPECT_EQ(data::wordnet_lexname(38), "verb.motion");
  if (!file_exists("/usr/share/wordnet/data.noun")) GTEST_SKIP() << "wordnet-base not installed";
  auto d = tasks::wordnet_lexname_task("/usr/share/wordnet", 500, 100, 0);
  EXPECT_EQ(d.train.size(), 500u);
  EXPECT_EQ(d.test.size(), 100u);
}

TEST(Regress, LeastSquaresRecoversExactCoefficients) {
  std::vector<std::vector<double>> x;
  std::vector<double> y;
  for (int i = 0; i < 20; ++i) {
    const double a = i * 0.5 - 3, b = (i * 7 % 11) - 5.0;
    x.push_back({a, b});
    y.push_back(3.0 + 2.0 * a - 1.0 * b);
  }
  const auto coef = tasks::least_squares_fit(x, y);
  ASSERT_EQ(coef.size(), 3u);
  EXPECT_NEAR(coef[0], 3.0, 1e-9);
  EXPECT_NEAR(coef[1], 2.0, 1e-9);
  EXPECT_NEAR(coef[2], -1.0, 1e-9);
}

TEST(Regress, MlpLearnsANonlinearTargetLeastSquaresCannot) {
  tasks::RegressionData d;
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(-2, 2);
  for (int i = 0; i < 600; ++i) {
    const double a = u(rng), b = u(rng);
    d.x.push_back({a, b});
    d.y.push_back(std::sin(2 * a) + b * b);
  }
  tasks::RegressOptions opt;
  opt.hidden = 32;
  opt.epochs = 150;
  const auto r = tasks::train_regressor(d, opt);
  EXPECT_EQ(r.test_rows, 120);
  EXPECT_GT(r.mlp.r2, 0.9) << tasks::regress_table(r);
  EXPECT_LT(r.least_squares.r2, 0.4) << tasks::regress_table(r);
  EXPECT_NEAR(r.mean.r2, 0.0, 0.05);
}

// scikit-learn's diabetes set: ordinary least squares with an intercept on all 442 rows explains
// R^2 = 0.5177 of the variance (LinearRegression().fit(X, y).score(X, y), also noted in SOURCE.md).
TEST(Regress, DiabetesLeastSquaresMatchesThePublishedFit) {
  const std::string dir = shared_data_dir() + "/sklearn_toy";
  if (!file_exists(dir + "/diabetes_data_raw.csv")) GTEST_SKIP() << dir << " not present";
  const auto d = tasks::read_regression_files(dir + "/diabetes_data_raw.csv", dir + "/diabetes_target.csv");
  ASSERT_EQ(d.x.size(), 442u);
  ASSERT_EQ(d.x[0].size(), 10u);
  const auto fit = eval::regression_report(tasks::least_squares_predict(tasks::least_squares_fit(d.x, d.y), d.x), d.y);
  EXPECT_NEAR(fit.r2, 0.51775, 5e-6);
  const auto r = tasks::train_regressor(d, {});
  EXPECT_GT(r.mlp.r2, r.mean.r2 + 0.3) << tasks::regress_table(r);
  EXPECT_GT(r.least_squares.r2, 0.4) << tasks::regress_table(r);
}

TEST(Regress, BadFilesAreRefusedWithFileAndLine) {
  TempDir dir;
  const std::string f = path_join(dir.path, "x.csv"), t = path_join(dir.path, "y.csv");
  write_file_atomic(f, "1 2 3\n4 5\n");
  EXPECT_THROW_MSG(tasks::read_regression_files(f, ""), DataError, "x.csv:2: 2 columns, expected 3");
  write_file_atomic(f, "1 2\n3 abc\n");
  EXPECT_THROW_MSG(tasks::read_regression_files(f, ""), DataError, "x.csv:2: 'abc' is not a number");
  write_file_atomic(f, "1 2\n3 4\n5 6\n");
  write_file_atomic(t, "1\n2\n");
  EXPECT_THROW_MSG(tasks::read_regression_files(f, t), DataError, "2 targets for 3 rows");
  const auto d = tasks::read_regression_files(f, "");  // the last column is the target
  EXPECT_EQ(d.y, (std::vector<double>{2, 4, 6}));
}
