// Adversarial attacks and defences, and the fairness measures: each checked against an explicit
// computation from its definition (hand-derived gradients, brute-force permutation tests, hand-counted
// rates, per-sentence losses through another code path).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/text.h"
#include "dsforge/data/augment.h"
#include "dsforge/data/counterfactual.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/io.h"
#include "dsforge/robust/attacks.h"
#include "dsforge/robust/defend.h"
#include "dsforge/robust/fairness.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/tasks/text_classifier.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/train/adversarial.h"
#include "dsforge/vision/images.h"
#include "dsforge/vision/train_image.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace dsforge;
namespace fs = std::filesystem;

namespace {

// A linear model's cross-entropy, per example, and its input gradient derived by hand:
// d/dx CE(x W, y) = (softmax(x W) - onehot(y)) W^T.
struct Linear {
  at::Tensor W = at::tensor({0.5, -1.0, 0.25, 2.0, -0.75, 1.5}, at::kDouble).view({3, 2});
  at::Tensor y = at::tensor({0, 1, 1, 0}, at::kLong);
  at::Tensor loss(const at::Tensor& x) const { return at::cross_entropy_loss(at::matmul(x, W), y, {}, at::Reduction::None); }
  at::Tensor grad(const at::Tensor& x) const {
    return at::matmul(at::softmax(at::matmul(x, W), -1) - at::one_hot(y, 2).to(at::kDouble), W.t());
  }
};

at::Tensor inputs() { return at::tensor({0.2, 0.4, 0.6, 0.9, 0.1, 0.5, 0.3, 0.7, 0.8, 0.05, 0.95, 0.5}, at::kDouble).view({4, 3}); }

}  // namespace

TEST(Robust, FgsmStepIsTheSignOfTheHandDerivedGradient) {
  const Linear m;
  const at::Tensor x = inputs();
  train::AttackOptions a;
  a.method = "fgsm";
  a.eps = 0.05;
  const at::Tensor adv = train::perturb([&](const at::Tensor& v) { return m.loss(v); }, x, a);
  EXPECT_TRUE(at::allclose(adv, x + 0.05 * m.grad(x).sign(), 0, 1e-12));
  // L2: eps times the unit gradient of each example.
  a.norm = "l2";
  const at::Tensor g = m.grad(x);
  const at::Tensor l2 = train::perturb([&](const at::Tensor& v) { return m.loss(v); }, x, a);
  EXPECT_TRUE(at::allclose(l2, x + 0.05 * g / g.norm(2, {1}, true), 0, 1e-12));
  // The box clips: pixels stay in [0, 1].
  a.norm = "linf";
  a.eps = 0.5;
  const at::Tensor boxed = train::perturb([&](const at::Tensor& v) { return m.loss(v); }, x, a, {}, train::Box{0, 1});
  EXPECT_TRUE(at::allclose(boxed, (x + 0.5 * g.sign()).clamp(0, 1), 0, 1e-12));
  // The attack leaves the parameters' gradients alone.
  at::Tensor w = m.W.clone().requires_grad_(true);
  train::perturb([&](const at::Tensor& v) { return at::cross_entropy_loss(at::matmul(v, w), m.y, {}, at::Reduction::None); }, x, a);
  EXPECT_FALSE(w.grad().defined());
}

TEST(Robust, PgdStaysInItsBallAndBoxIsSeededAndRaisesTheLoss) {
  const Linear m;
  const at::Tensor x = inputs();
  for (const char* norm : {"linf", "l2"}) {
    train::AttackOptions a;
    a.norm = norm;
    a.eps = 0.3;
    a.steps = 15;
    a.seed = 5;
    auto run = [&](uint64_t seed) {
      train::AttackOptions b = a;
      b.seed = seed;
      return train::perturb([&](const at::Tensor& v) { return m.loss(v); }, x, b, {}, train::Box{0, 1});
    };
    const at::Tensor adv = run(5);
    const at::Tensor n = train::perturbation_norm(adv - x, norm);
    EXPECT_LE(n.max().item<double>(), 0.3 * (1 + 1e-12)) << norm;
    EXPECT_GE(adv.min().item<double>(), 0.0);
    EXPECT_LE(adv.max().item<double>(), 1.0);
    EXPECT_TRUE(at::equal(adv, run(5))) << "same seed, same attack";
    a.steps = 1;  // (long steps along a linear model's constant gradient reach the same corner from any start)
    a.alpha = 0.01;
    EXPECT_FALSE(at::equal(run(5), run(6))) << "the random start depends on the seed";
    a.steps = 15;
    a.alpha = 0;
    EXPECT_GT(m.loss(adv).sum().item<double>(), m.loss(x).sum().item<double>() + 0.1);
  }
  // A mask pins coordinates: the masked-out column never moves.
  train::AttackOptions a;
  a.eps = 0.2;
  const at::Tensor mask = at::tensor({1.0, 0.0, 1.0}, at::kDouble).view({1, 3});
  const at::Tensor adv = train::perturb([&](const at::Tensor& v) { return m.loss(v); }, x, a, mask);
  EXPECT_TRUE(at::equal(adv.select(1, 1), x.select(1, 1)));
  EXPECT_GT((adv - x).abs().max().item<double>(), 0.1);
}

TEST(Robust, AttackOptionsAreValidated) {
  train::AttackOptions a;
  a.eps = -0.1;
  EXPECT_THROW_MSG(train::validate(a), ConfigError, "eps -0.1: expected a budget >= 0");
  a.eps = 0.1;
  a.norm = "l1";
  EXPECT_THROW_MSG(train::validate(a), ConfigError, "norm 'l1'");
  a.norm = "linf";
  a.steps = 0;
  EXPECT_THROW_MSG(train::validate(a), ConfigError, "steps 0");
  // eps 0 is the clean input; FreeLB with one step and eps 0 is the clean loss.
  const Linear m;
  a.steps = 1;
  a.eps = 0;
  EXPECT_TRUE(at::equal(train::perturb([&](const at::Tensor& v) { return m.loss(v); }, inputs(), a), inputs()));
  EXPECT_NEAR(train::freelb_loss([&](const at::Tensor& v) { return m.loss(v); }, inputs(), a).item<double>(),
              m.loss(inputs()).mean().item<double>(), 1e-12);
}

// ---------------------------------------------------------------- WEAT

namespace {

// s(w, A, B) and the effect size and exact p-value straight from Caliskan et al.'s definitions, over
// every subset of X u Y of size |X| (std::next_permutation over a 0/1 mask).
struct Brute {
  double d = 0, p = 0;
};
Brute brute_weat(const std::vector<std::vector<float>>& X, const std::vector<std::vector<float>>& Y, const std::vector<std::vector<float>>& A,
                 const std::vector<std::vector<float>>& B) {
  auto cos = [](const std::vector<float>& u, const std::vector<float>& v) {
    double uv = 0, uu = 0, vv = 0;
    for (size_t i = 0; i < u.size(); ++i) uv += u[i] * v[i], uu += u[i] * u[i], vv += v[i] * v[i];
    return uv / std::sqrt(uu * vv);
  };
  auto s = [&](const std::vector<float>& w) {
    double a = 0, b = 0;
    for (const auto& v : A) a += cos(w, v) / static_cast<double>(A.size());
    for (const auto& v : B) b += cos(w, v) / static_cast<double>(B.size());
    return a - b;
  };
  std::vector<double> all;
  for (const auto& w : X) all.push_back(s(w));
  for (const auto& w : Y) all.push_back(s(w));
  double mx = 0, my = 0, mean = 0;
  for (size_t i = 0; i < X.size(); ++i) mx += all[i] / static_cast<double>(X.size());
  for (size_t i = X.size(); i < all.size(); ++i) my += all[i] / static_cast<double>(Y.size());
  for (double v : all) mean += v / static_cast<double>(all.size());
  double var = 0;
  for (double v : all) var += (v - mean) * (v - mean) / static_cast<double>(all.size() - 1);
  Brute r;
  r.d = (mx - my) / std::sqrt(var);
  auto stat = [&](const std::vector<int>& in_x) {
    double t = 0;
    for (size_t i = 0; i < all.size(); ++i) t += in_x[i] ? all[i] : -all[i];
    return t;
  };
  std::vector<int> mask(all.size(), 0);
  for (size_t i = 0; i < X.size(); ++i) mask[i] = 1;
  const double observed = stat(mask);
  std::sort(mask.begin(), mask.end());
  int64_t above = 0, total = 0;
  do {
    above += stat(mask) > observed;
    ++total;
  } while (std::next_permutation(mask.begin(), mask.end()));
  r.p = static_cast<double>(above) / static_cast<double>(total);
  return r;
}

}  // namespace

TEST(Fairness, WeatMatchesItsDefinitionExactlyAndBySampling) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 1);
  std::map<std::string, std::vector<float>> table;
  robust::WeatTest t{"toy", "", {"x", {}}, {"y", {}}, {"a", {}}, {"b", {}}};
  auto add = [&](robust::WordSet& set, const std::string& prefix, int count, float shift) {
    for (int i = 0; i < count; ++i) {
      std::vector<float> v(6);
      for (auto& f : v) f = n(rng);
      v[0] += shift;
      set.words.push_back(prefix + std::to_string(i));
      table[set.words.back()] = v;
    }
  };
  add(t.x, "x", 6, 1.0f);   // X leans towards A (both shifted along the first axis)
  add(t.y, "y", 5, -1.0f);
  add(t.a, "a", 4, 1.5f);
  add(t.b, "b", 4, -1.5f);
  t.x.words.push_back("unknownword");
  const robust::WordVectorLookup lookup = [&](const std::string& w) -> std::optional<std::vector<float>> {
    auto it = table.find(w);
    return it == table.end() ? std::nullopt : std::optional<std::vector<float>>(it->second);
  };
  auto vecs = [&](const robust::WordSet& s) {
    std::vector<std::vector<float>> out;
    for (const auto& w : s.words)
      if (table.count(w)) out.push_back(table[w]);
    return out;
  };
  const Brute b = brute_weat(vecs(t.x), vecs(t.y), vecs(t.a), vecs(t.b));
  const robust::WeatResult exact = robust::run_weat(t, lookup);
  EXPECT_TRUE(exact.exact);
  EXPECT_EQ(exact.permutations, 462);  // C(11, 6)
  EXPECT_NEAR(exact.effect_size, b.d, 1e-7);
  EXPECT_DOUBLE_EQ(exact.p_value, b.p);
  EXPECT_GT(exact.effect_size, 1.0);
  EXPECT_EQ(exact.missing, std::vector<std::string>{"unknownword"});
  // Sampling the splits estimates the same p-value; the same seed gives the same estimate.
  const robust::WeatResult sampled = robust::run_weat(t, lookup, 20000, 1, /*exact_limit=*/10);
  EXPECT_FALSE(sampled.exact);
  EXPECT_NEAR(sampled.p_value, b.p, 0.01);
  EXPECT_EQ(sampled.p_value, robust::run_weat(t, lookup, 20000, 1, 10).p_value);
  // A set with no word in the vocabulary is an error naming the test and the set.
  robust::WeatTest empty = t;
  empty.a.words = {"nope", "nothing"};
  EXPECT_THROW_MSG(robust::run_weat(empty, lookup), DataError, "WEAT [toy]: no word of set 'a' is in the vocabulary (2 tried)");
}

TEST(Fairness, TheRepositoryWeatListsParse) {
  const auto tests = robust::read_weat_tests(source_dir() + "/data/fairness/weat.txt");
  ASSERT_EQ(tests.size(), 7u);
  EXPECT_EQ(tests[0].name, "weat1");
  EXPECT_EQ(tests[0].x.words.size(), 25u);
  EXPECT_EQ(tests[0].b.words.back(), "prison");
  EXPECT_EQ(tests[2].name, "weat6");
  EXPECT_EQ(tests[2].a.label, "career");
  TempDir dir;
  const std::string bad = dir.path + "/w.txt";
  write_file_atomic(bad, "[t] x\nX a: b\nQ c: d\n");
  EXPECT_THROW_MSG(robust::read_weat_tests(bad), DataError, "w.txt:3: expected 'X|Y|A|B label: words'");
  write_file_atomic(bad, "[t] x\nX a: b\nY c: d\n");
  EXPECT_THROW_MSG(robust::read_weat_tests(bad), DataError, "test [t] needs all four sets");
}

TEST(Fairness, TermSwapperSwapsWholeWordsKeepingCase) {
  const data::TermSwapper s = data::TermSwapper::load(source_dir() + "/data/fairness/gender_pairs.txt");
  EXPECT_EQ(s.swap("He thanked his sister."), "She thanked her brother.");
  EXPECT_EQ(s.swap("the MAN and the woman"), "the WOMAN and the man");
  EXPECT_EQ(s.swap("shepherd heroes"), "shepherd heroes");  // whole words only
  EXPECT_EQ(s.mentions("she saw her son"), 3);
  EXPECT_EQ(s.swap(s.swap("the king met a girl")), "the king met a girl");
  TempDir dir;
  const std::string bad = dir.path + "/p.txt";
  write_file_atomic(bad, "# pairs\nhe she\nlonely\n");
  EXPECT_THROW_MSG(data::TermSwapper::load(bad), DataError, "p.txt:3: 'lonely' has no counterpart");
  write_file_atomic(bad, "he sh3\n");
  EXPECT_THROW_MSG(data::TermSwapper::load(bad), DataError, "p.txt:1: 'sh3' is not one word");
}

TEST(Fairness, GroupRatesAndDifferencesByHand) {
  // Group a: 4 examples, gold 1 1 0 0, predicted 1 0 1 0 -> positive rate 1/2, TPR 1/2, FPR 1/2.
  // Group b: 3 examples, gold 1 0 0, predicted 1 0 0 -> positive rate 1/3, TPR 1, FPR 0.
  std::vector<robust::GroupExample> d = {{"", "1", "a"}, {"", "1", "a"}, {"", "0", "a"}, {"", "0", "a"},
                                         {"", "1", "b"}, {"", "0", "b"}, {"", "0", "b"}};
  const robust::GroupFairness g = robust::group_fairness({"1", "0", "1", "0", "1", "0", "0"}, d, "1");
  ASSERT_EQ(g.groups.size(), 2u);
  EXPECT_NEAR(g.groups[0].positive_rate, 0.5, 1e-12);
  EXPECT_NEAR(g.groups[1].positive_rate, 1.0 / 3, 1e-12);
  EXPECT_NEAR(g.demographic_parity_difference, 0.5 - 1.0 / 3, 1e-12);
  EXPECT_NEAR(g.equalized_odds_difference, 0.5, 1e-12);  // max(TPR gap 0.5, FPR gap 0.5)
  EXPECT_NEAR(g.groups[1].accuracy, 1.0, 1e-12);
}

// ---------------------------------------------------------------- text classifiers

namespace {

// Label = the class of the one keyword among filler words (as in test_tasks.cpp).
tasks::ClassifyData keyword_data(size_t n_train, size_t n_test) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> classes = {{"animal", {"cat", "dog", "horse"}},
                                                                                 {"plant", {"tree", "rose", "grass"}}};
  const std::vector<std::string> filler = {"the", "a", "big", "small", "old", "new", "red", "blue", "near", "far", "very", "quite"};
  std::mt19937 rng(11);
  tasks::ClassifyData d;
  d.name = "keywords";
  for (size_t i = 0; i < n_train + n_test; ++i) {
    const auto& [label, keys] = classes[i % 2];
    std::vector<std::string> words;
    for (int k = 0; k < 5; ++k) words.push_back(filler[rng() % filler.size()]);
    words.insert(words.begin() + static_cast<long>(rng() % 6), keys[rng() % 3]);
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    (i < n_train ? d.train : d.test).push_back({text, label});
  }
  return d;
}

struct KeywordFixture {
  TempDir dir;
  tasks::ClassifyData data = keyword_data(240, 60);
  std::string model_dir, classifier;
  tasks::FinetuneOptions opt;
  KeywordFixture() {
    std::vector<std::string> docs;
    for (const auto& e : data.train) docs.push_back(e.text);
    model_dir = save_tiny_model(dir.path, docs);
    opt.epochs = 5;
    opt.batch = 16;
    opt.lr = 3e-3;
    classifier = path_join(dir.path, "cls");
    tasks::finetune_classifier(model_dir, data, opt, classifier);
  }
};

}  // namespace

TEST(Robust, TextAttacksOnAKeywordClassifier) {
  KeywordFixture f;
  const tasks::TextClassifier c = tasks::load_text_classifier(f.classifier);
  // The saved folder predicts what fine-tuning measured.
  const auto ft = nlohmann::json::parse(read_file(path_join(f.classifier, "finetune.json")));
  std::vector<std::string> texts;
  for (const auto& e : f.data.test) texts.push_back(e.text);
  const at::Tensor pred = c.logits(texts).argmax(-1);
  int64_t correct = 0;
  for (size_t i = 0; i < texts.size(); ++i) correct += pred[static_cast<int64_t>(i)].item<int64_t>() == c.label_index(f.data.test[i].label);
  EXPECT_NEAR(static_cast<double>(correct) / static_cast<double>(texts.size()), ft["model"]["accuracy"].get<double>(), 1e-9);
  EXPECT_GT(correct, 50);

  // Embedding PGD: within eps, reproducible, never better than clean.
  train::AttackOptions a;
  a.norm = "l2";
  a.eps = 2.0;
  a.steps = 8;
  const robust::AttackReport e1 = robust::embedding_attack(c, f.data.test, a), e2 = robust::embedding_attack(c, f.data.test, a);
  EXPECT_EQ(e1.robust_accuracy, e2.robust_accuracy);
  EXPECT_EQ(e1.mean_perturbation, e2.mean_perturbation);
  EXPECT_LE(e1.mean_perturbation, 2.0 + 1e-6);
  EXPECT_LE(e1.robust_accuracy, e1.clean_accuracy);
  EXPECT_NEAR(e1.clean_accuracy, static_cast<double>(correct) / 60, 1e-9);
  EXPECT_DOUBLE_EQ(e1.queries_per_example, 8);

  // Synonym substitution: an attacked text differs from its original only in substituted words, at most
  // the budget of them.
  const data::WordNet wn("/usr/share/wordnet");
  robust::SynonymAttackOptions so;
  so.budget = 0.2;
  const robust::AttackReport s = robust::synonym_attack(c, f.data.test, wn, so);
  EXPECT_GT(s.success_rate, 0.0) << "replacing the one keyword by a synonym the model never saw flips some";
  EXPECT_LE(s.robust_accuracy, s.clean_accuracy);
  EXPECT_GT(s.queries_per_example, 1.0);
  for (const auto& ex : s.shown) {
    const auto a_words = split_whitespace(ex.source), b_words = split_whitespace(ex.adversarial);
    ASSERT_EQ(a_words.size(), b_words.size()) << ex.adversarial;
    int changed = 0;
    for (size_t i = 0; i < a_words.size(); ++i) changed += a_words[i] != b_words[i];
    EXPECT_GE(changed, 1);
    EXPECT_LE(changed, 1) << "budget 0.2 of 6 words: one substitution";
    EXPECT_NE(ex.adversarial_pred, ex.gold);
  }
  EXPECT_EQ(robust::synonym_attack(c, f.data.test, wn, so).success_rate, s.success_rate);
  so.budget = 0;
  EXPECT_THROW_MSG(robust::synonym_attack(c, f.data.test, wn, so), ConfigError, "budget 0");

  // Counterfactual fairness with "cat <-> tree" as the identity pair: the gap is the total-variation
  // distance of the two predictions, recomputed here from the logits.
  const data::TermSwapper swap(std::vector<std::vector<std::string>>{{"cat", "tree"}});
  const robust::CounterfactualResult cf = robust::counterfactual_fairness(c, texts, swap);
  double gap = 0;
  int64_t mentioning = 0;
  for (const auto& t : texts) {
    if (swap.mentions(t) == 0) continue;
    ++mentioning;
    const at::Tensor p = at::softmax(c.logits({t, swap.swap(t)}), -1);
    gap += 0.5 * (p[0] - p[1]).abs().sum().item<double>();
  }
  EXPECT_EQ(cf.mentioning, mentioning);
  EXPECT_GT(mentioning, 5);
  EXPECT_NEAR(cf.mean_gap, gap / static_cast<double>(mentioning), 1e-6);
  EXPECT_GT(cf.flip_rate, 0.5) << "the keyword decides the class, so swapping it flips";
}

TEST(Robust, LogitPairingClosesTheCounterfactualGapAndDefencesTrain) {
  KeywordFixture f;
  std::vector<std::string> texts;
  for (const auto& e : f.data.test) texts.push_back(e.text);
  const data::TermSwapper swap(std::vector<std::vector<std::string>>{{"cat", "tree"}});
  const double before = robust::counterfactual_fairness(tasks::load_text_classifier(f.classifier), texts, swap).mean_gap;
  const robust::MitigationResult r = robust::mitigate_classifier(f.model_dir, f.data, swap, path_join(f.dir.path, "clp"), f.opt, "clp", 5.0,
                                                                f.classifier);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_NEAR(r.rows[0].second.mean_gap, before, 1e-9);
  EXPECT_LT(r.rows[1].second.mean_gap, 0.5 * before) << "pairing the logits of 'cat' and 'tree' texts";
  EXPECT_TRUE(file_exists(path_join(f.dir.path, "clp/fairness.html")));

  // Embedding-space adversarial fine-tuning (PGD and FreeLB) trains a working classifier.
  for (const char* mode : {"pgd", "freelb"}) {
    tasks::FinetuneOptions o = f.opt;
    train::AttackOptions a;
    a.norm = "l2";
    a.eps = 0.05;  // the tiny model's sentence embeddings have a norm of about 0.4
    a.steps = 2;
    o.adversarial = a;
    o.adversarial_mode = mode;
    const tasks::FinetuneResult fr = tasks::finetune_classifier(f.model_dir, f.data, o);
    EXPECT_GT(fr.model.accuracy, 0.8) << mode;
  }
  tasks::FinetuneOptions bad = f.opt;
  bad.adversarial = train::AttackOptions{};
  bad.adversarial->eps = -1;
  EXPECT_THROW_MSG(tasks::finetune_classifier(f.model_dir, f.data, bad), ConfigError, "finetune: adversarial: eps -1");
}

// ---------------------------------------------------------------- language model probe

TEST(Fairness, LmProbeIsTheMeanTokenLossOfEachFilledTemplate) {
  TempDir dir;
  model::ModelConfig mc = model::model_config_from_preset("nano");
  mc.num_nextn_predict_layers = 0;  // so that CausalLm::loss predicts every next token, as the probe does
  const std::string model_dir = save_tiny_model(dir.path, {"the man was a doctor", "the woman was a nurse", "he was kind"}, mc);
  const std::string probe_path = dir.path + "/probe.txt";
  write_file_atomic(probe_path, "# groups\n= m: man boy\n= f: woman girl\nThe {} was a doctor.\nA {} ran.\n");
  robust::LmProbe p = robust::read_lm_probe(probe_path);
  robust::run_lm_probe(model_dir, p);
  // The same through CausalLm::loss (main next-token loss, no MTP) on [eot] + tokens.
  const model::CausalLm m = model::load_pretrained(model_dir);
  m->eval();
  const auto tok = tok::BpeTokenizer::load(model_dir + "/tokenizer.json");
  auto nll = [&](const std::string& s) {
    std::vector<int64_t> ids = {std::max<int64_t>(tok.eot_id(), 0)};
    for (int32_t t : tok.encode(s, false)) ids.push_back(t);
    at::NoGradGuard ng;
    return m->loss(at::tensor(ids, at::kLong).unsqueeze(0), 0.0).main.item<double>();
  };
  const double m0 = (nll("The man was a doctor.") + nll("The boy was a doctor.")) / 2;
  const double f1 = (nll("A woman ran.") + nll("A girl ran.")) / 2;
  EXPECT_NEAR(p.template_group_log_ppl[0][0], m0, 1e-4);
  EXPECT_NEAR(p.template_group_log_ppl[1][1], f1, 1e-4);
  const double gm = (p.template_group_log_ppl[0][0] + p.template_group_log_ppl[1][0]) / 2;
  const double gf = (p.template_group_log_ppl[0][1] + p.template_group_log_ppl[1][1]) / 2;
  EXPECT_NEAR(p.gap, std::abs(gm - gf), 1e-12);
  write_file_atomic(probe_path, "= m: man\nThe {} ran.\n");
  EXPECT_THROW_MSG(robust::read_lm_probe(probe_path), DataError, "two or more '= group: terms' lines");
}

// ---------------------------------------------------------------- images and the CLI

TEST(SlowRobust, ImageAttacksAndAdversarialTrainingOnDigits) {
  if (!fs::exists(shared_data_dir() + "/sklearn_toy/digits.csv")) GTEST_SKIP() << "shared data absent";
  TempDir t;
  vision::PrepareImagesOptions po;
  po.val_fraction = 0.2;
  const std::string data = t.path + "/digits";
  vision::prepare_images(shared_data_dir() + "/sklearn_toy/digits.csv", data, po);
  robust::RobustImageOptions o;
  o.train.epochs = 4;
  train::AttackOptions a;
  a.eps = 0.1;
  a.steps = 5;
  o.train.adversarial = a;
  o.attack = a;
  o.attack.steps = 10;
  const robust::DefenceResult r = robust::defend_image_model(data, t.path + "/run", o);
  ASSERT_EQ(r.rows.size(), 2u);
  const robust::AttackReport& plain = r.rows[0].second;
  const robust::AttackReport& adv = r.rows[1].second;
  EXPECT_EQ(plain.examples, 359);
  EXPECT_LE(plain.mean_perturbation, 0.1 + 1e-6);
  EXPECT_LE(plain.robust_accuracy, plain.clean_accuracy);
  EXPECT_GT(adv.robust_accuracy, plain.robust_accuracy + 0.1) << robust::attack_table(r.rows);
  EXPECT_GT(adv.clean_accuracy, 0.85);
  // Re-attacking the saved model reproduces the row.
  const robust::AttackReport again = robust::attack_image_model(t.path + "/run/adversarial/model", data, "val", o.attack);
  EXPECT_EQ(again.robust_accuracy, adv.robust_accuracy);
  const auto j = nlohmann::json::parse(read_file(t.path + "/run/robust.json"));
  EXPECT_EQ(j["results"].size(), 2u);
  EXPECT_NE(read_file(t.path + "/run/robust.html").find("data:image/png;base64,"), std::string::npos);
}

TEST(Cli, RobustAndFairnessCommandsAndTheirErrors) {
  TempDir t;
  std::vector<std::string> docs = {"the man was a doctor", "the woman was a nurse", "he was kind and she was kind"};
  const std::string lm = save_tiny_model(t.path, docs);
  const std::string tsv = t.path + "/d.tsv";
  write_file_atomic(tsv, "he is good\t1\nshe is bad\t0\n");
  // A language model is not a classifier an attack can score.
  CliRun r = run_cli("robust attack --model " + lm + " --data " + tsv, t.path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE((r.out + r.err).find("language models have no label to attack"), std::string::npos) << r.out << r.err;
  r = run_cli("robust attack --model " + lm + " --data " + tsv + " --eps=-1", t.path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE((r.out + r.err).find("robust attack: eps -1: expected a budget >= 0"), std::string::npos) << r.out << r.err;
  // WEAT on the LM's embeddings: every word is representable (the mean of its tokens) ...
  r = run_cli("fairness weat --model " + lm + " --test weat7 --out " + t.path + "/weat", t.path);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("weat7"), std::string::npos);
  const auto j = nlohmann::json::parse(read_file(t.path + "/weat/fairness.json"));
  EXPECT_TRUE(j["weat"][0]["exact"].get<bool>());
  EXPECT_EQ(j["weat"][0]["permutations"], 12870);  // C(16, 8)
  r = run_cli("report " + t.path + "/weat", t.path);  // the run report carries the section
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(read_file(t.path + "/weat/report.html").find("WEAT (Caliskan et al. 2017)"), std::string::npos);
  // ... unless only single-token words count: then a whole set can be missing.
  r = run_cli("fairness weat --model " + lm + " --test weat1 --single-token", t.path);
  EXPECT_NE(r.code, 0);
  EXPECT_NE((r.out + r.err).find("is in the vocabulary"), std::string::npos) << r.out << r.err;
  r = run_cli("fairness lm --model " + lm, t.path);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find("nats per token"), std::string::npos);
  // Counterfactual data augmentation in `data augment`: counterfactual copies only (copies = 0).
  write_file_atomic(t.path + "/in.txt", "He thanked his sister.\nNothing to swap here.\n");
  r = run_cli("data augment --input " + t.path + "/in.txt --output " + t.path + "/out.txt --augment.copies=0 --augment.cda_pairs=" +
                  source_dir() + "/data/fairness/gender_pairs.txt",
              t.path);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(read_file(t.path + "/out.txt"), "She thanked her brother.\n");
}
