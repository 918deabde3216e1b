// Text, classification and regression metrics against published reference scores (sacreBLEU's and
// rouge-score's documentation, the Hugging Face chrF card), hand-computed cases and the CLI's errors.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/eval/metrics_files.h"
#include "dsforge/eval/text_metrics.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::eval;

namespace {
// sacreBLEU's README example: three segments, two reference streams.
const std::vector<std::string> kSys = {"The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."};
const std::vector<std::vector<std::string>> kRefs = {
    {"The dog bit the man.", "It was not unexpected.", "The man bit him first."},
    {"The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."}};
}  // namespace

TEST(Bleu, Tokenizer13a) {
  EXPECT_EQ(tokenize_13a("It wasn't surprising."), "It wasn't surprising .");  // the apostrophe is not split
  EXPECT_EQ(tokenize_13a("Costs 3.5 or 1,000 (approx.) - see 1990-1995!"),
            "Costs 3.5 or 1,000 ( approx . ) - see 1990 - 1995 !");
  EXPECT_EQ(tokenize_13a("a &amp; b &lt;c&gt;"), "a & b < c >");
  EXPECT_EQ(tokenize_13a("Zürich, Genève."), "Zürich , Genève .");
}

TEST(Bleu, MatchesSacrebleuReadmeExample) {
  // sacreBLEU README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)
  BleuScore s = corpus_bleu(kSys, kRefs);
  EXPECT_NEAR(s.score, 48.53, 0.005);
  EXPECT_NEAR(s.precisions[0], 82.4, 0.05);
  EXPECT_NEAR(s.precisions[1], 50.0, 0.05);
  EXPECT_NEAR(s.precisions[2], 45.5, 0.05);
  EXPECT_NEAR(s.precisions[3], 37.5, 0.05);
  EXPECT_NEAR(s.bp, 0.943, 0.0005);
  EXPECT_EQ(s.sys_len, 17);
  EXPECT_EQ(s.ref_len, 18);
  EXPECT_EQ(s.signature.substr(0, 43), "nrefs:2|case:mixed|eff:no|tok:13a|smooth:ex");
}

TEST(Bleu, HandComputedSmoothingAndBrevity) {
  // hyp "a b c d" vs ref "a b c e f": 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0/1 -> exp
  // smoothing gives 100 / (2 * 1); BP = exp(1 - 5/4).
  BleuScore s = corpus_bleu({"a b c d"}, {{"a b c e f"}});
  const double expect = std::exp(1 - 5.0 / 4) * std::exp((std::log(75.0) + std::log(200.0 / 3) + std::log(50.0) + std::log(50.0)) / 4);
  EXPECT_NEAR(s.score, expect, 1e-9);
  // Sentence BLEU uses the effective order: a 2-word hypothesis is scored on 1- and 2-grams only.
  BleuScore t = sentence_bleu("a b", {"a b"});
  EXPECT_NEAR(t.score, 100.0, 1e-9);
  EXPECT_THROW(corpus_bleu({"a", "b"}, {{"a"}}), DataError);
}

TEST(Chrf, MatchesPublishedScores) {
  EXPECT_NEAR(corpus_chrf(kSys, kRefs).score, 59.73, 0.005);  // sacreBLEU README: chrF2 = 59.73
  // The Hugging Face chrF metric card (sacreBLEU underneath).
  EXPECT_NEAR(corpus_chrf({"The relationship between Obama and Netanyahu is not exactly friendly."},
                          {{"The ties between Obama and Netanyahu are not particularly friendly."}}).score,
              61.576379378113785, 1e-9);
  EXPECT_NEAR(corpus_chrf({"The relationship between cats and dogs is not exactly friendly.",
                           "a good bookshop is just a genteel black hole that knows how to read."},
                          {{"The relationship between dogs and cats is not exactly friendly.",
                            "A good bookshop is just a genteel Black Hole that knows how to read."}}).score,
              84.64214891738334, 1e-9);
}

TEST(Rouge, PorterStemmerAsNltk) {
  const std::pair<const char*, const char*> cases[] = {
      {"caresses", "caress"}, {"ponies", "poni"},     {"ties", "tie"},         {"cats", "cat"},
      {"feed", "feed"},       {"agreed", "agre"},     {"plastered", "plaster"}, {"motoring", "motor"},
      {"sing", "sing"},       {"conflated", "conflat"}, {"troubled", "troubl"}, {"sized", "size"},
      {"hopping", "hop"},     {"tanned", "tan"},      {"falling", "fall"},     {"hissing", "hiss"},
      {"fizzed", "fizz"},     {"failing", "fail"},    {"filing", "file"},      {"happy", "happi"},
      {"sky", "sky"},         {"relational", "relat"}, {"conditional", "condit"}, {"rational", "ration"},
      {"digitizer", "digit"}, {"generalization", "gener"}, {"oscillators", "oscil"}, {"hopefulness", "hope"},
      {"electrical", "electr"}, {"adjustment", "adjust"}, {"dependent", "depend"}, {"adoption", "adopt"},
      {"probate", "probat"},  {"rate", "rate"},       {"cease", "ceas"},       {"controlling", "control"},
      {"roll", "roll"},       {"dying", "die"},       {"running", "run"},      {"generously", "gener"},
      {"jumps", "jump"},      {"quickly", "quickli"}, {"studies", "studi"},    {"cried", "cri"}};
  for (const auto& [w, s] : cases) EXPECT_EQ(porter_stem(w), s) << w;
}

TEST(Rouge, MatchesRougeScoreReadmeExample) {
  // rouge-score README: scorer(['rouge1', 'rougeL'], use_stemmer=True).score(
  //   'The quick brown fox jumps over the lazy dog', 'The quick brown dog jumps on the log.')
  const std::string target = "The quick brown fox jumps over the lazy dog", pred = "The quick brown dog jumps on the log.";
  PRF r1 = rouge("rouge1", target, pred, true), rl = rouge("rougeL", target, pred, true);
  EXPECT_NEAR(r1.precision, 0.75, 1e-12);
  EXPECT_NEAR(r1.recall, 0.6666666666666666, 1e-12);
  EXPECT_NEAR(r1.fmeasure, 0.7058823529411765, 1e-12);
  EXPECT_NEAR(rl.precision, 0.625, 1e-12);
  EXPECT_NEAR(rl.recall, 0.5555555555555556, 1e-12);
  EXPECT_NEAR(rl.fmeasure, 0.5882352941176471, 1e-12);
}

TEST(Rouge, HandComputedBigramsAndSummaryLevelLcs) {
  // Bigrams of "a b c d" vs "a b d c": {ab, bc, cd} vs {ab, bd, dc}: 1 of 3 each way.
  PRF r2 = rouge("rouge2", "a b c d", "a b d c", false);
  EXPECT_NEAR(r2.fmeasure, 1.0 / 3, 1e-12);
  // rougeLsum: reference sentences "a b c" / "d e", candidate "a c" / "e d x": union LCS of sentence 1
  // with the candidates = {a, c}; of sentence 2 = {d} or {e} (LCS length 1) -> 3 hits of 5 ref / 5 cand tokens.
  PRF ls = rouge("rougeLsum", "a b c\nd e", "a c\ne d x", false);
  EXPECT_NEAR(ls.recall, 3.0 / 5, 1e-12);
  EXPECT_NEAR(ls.precision, 3.0 / 5, 1e-12);
  // Stemming merges inflections.
  EXPECT_NEAR(rouge("rouge1", "running dogs", "runs dog", true).fmeasure, 1.0, 1e-12);
  EXPECT_LT(rouge("rouge1", "running dogs", "runs dog", false).fmeasure, 0.01);
}

TEST(Classification, HandComputedReport) {
  // gold: a a a b b c; pred: a a b b c c
  ClassificationReport r = classification_report({"a", "a", "b", "b", "c", "c"}, {"a", "a", "a", "b", "b", "c"});
  EXPECT_NEAR(r.accuracy, 4.0 / 6, 1e-12);
  // a: P 2/2 R 2/3; b: P 1/2 R 1/2; c: P 1/2 R 1/1
  EXPECT_NEAR(r.per_class[0].fmeasure, 0.8, 1e-12);
  EXPECT_NEAR(r.per_class[1].fmeasure, 0.5, 1e-12);
  EXPECT_NEAR(r.per_class[2].fmeasure, 2.0 / 3, 1e-12);
  EXPECT_NEAR(r.macro.fmeasure, (0.8 + 0.5 + 2.0 / 3) / 3, 1e-12);
  EXPECT_NEAR(r.weighted.fmeasure, (3 * 0.8 + 2 * 0.5 + 1 * 2.0 / 3) / 6, 1e-12);
  EXPECT_NEAR(r.micro.fmeasure, 4.0 / 6, 1e-12);
  EXPECT_EQ(r.confusion[0][1], 1);  // one gold a predicted b
  EXPECT_EQ(r.confusion[1][2], 1);
}

TEST(Regression, HandComputedReport) {
  RegressionReport r = regression_report({2.5, 0.0, 2.0, 8.0}, {3.0, -0.5, 2.0, 7.0});
  EXPECT_NEAR(r.mse, 0.375, 1e-12);
  EXPECT_NEAR(r.mae, 0.5, 1e-12);
  EXPECT_NEAR(r.rmse, std::sqrt(0.375), 1e-12);
  EXPECT_NEAR(r.r2, 0.9486081370449679, 1e-12);  // scikit-learn's r2_score documentation example
}

TEST(MetricsFiles, BadInputIsRefusedNamingTheFile) {
  TempDir dir;
  auto file = [&](const std::string& name, const std::string& text) {
    const std::string p = path_join(dir.path, name);
    write_file_atomic(p, text);
    return p;
  };
  MetricsRequest req;
  req.kind = "bleu";
  req.hyp = file("hyp.txt", "a b c\nd e f\n");
  req.refs = {file("ref.txt", "a b c\n")};
  EXPECT_THROW_MSG(run_metrics(req), DataError, "ref.txt: 1 lines but");
  req.refs = {file("empty.txt", "")};
  EXPECT_THROW_MSG(run_metrics(req), DataError, "empty.txt: empty file");
  req.refs = {file("ref2.txt", "a b c\nd e f\n")};
  auto j = nlohmann::json::parse(run_metrics(req));
  EXPECT_EQ(j["score"].get<double>(), 0.0);  // no 4-grams in 3-word segments: corpus BLEU is 0, as in sacreBLEU
  req.hyp = file("hyp5.txt", "a b c d e\n");
  req.refs = {file("ref5.txt", "a b c d e\n")};
  j = nlohmann::json::parse(run_metrics(req));
  EXPECT_NEAR(j["score"].get<double>(), 100.0, 1e-9);

  MetricsRequest cls;
  cls.kind = "classification";
  cls.pred = file("pred.txt", "pos\nneg\nmaybe\n");
  cls.gold = file("gold.txt", "pos\nneg\nneg\n");
  cls.labels = {"pos", "neg"};
  EXPECT_THROW_MSG(run_metrics(cls), DataError, "pred.txt:3: unknown label 'maybe'");
  MetricsRequest reg;
  reg.kind = "regression";
  reg.pred = file("p.txt", "1.5\nabc\n");
  reg.gold = file("g.txt", "1\n2\n");
  EXPECT_THROW_MSG(run_metrics(reg), DataError, "p.txt:2: expected a number");
}

TEST(MetricsFiles, Multi30kReferencesScoreThemselvesPerfectly) {
  // Real data: every reference stream scored against itself, and a copy-source baseline against
  // the references; skipped without ../shared/data.
  const std::string mt = shared_data_dir() + "/mt_multi30k/test_2016_flickr.de";
  if (!file_exists(mt)) GTEST_SKIP() << "no " << mt;
  const auto de = read_lines(mt), en = read_lines(shared_data_dir() + "/mt_multi30k/test_2016_flickr.en");
  EXPECT_NEAR(corpus_bleu(de, {de}).score, 100.0, 1e-9);
  const double copy = corpus_bleu(en, {de}).score;  // English "translations" of German: a low baseline
  EXPECT_GT(copy, 0.0);
  EXPECT_LT(copy, 10.0);
  EXPECT_NEAR(corpus_chrf(de, {de}).score, 100.0, 1e-9);
}
