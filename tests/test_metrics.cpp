// Text, classification and regression metrics against published reference scores (sacreBLEU's and
// rouge-score's documentation, the Hugging Face chrF card), hand-computed cases and the CLI's errors.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/eval/metrics_files.h"
#include "dsforge/eval/mt_metrics.h"
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

TEST(Classification, HighestFirstOrdersByValueThenIndex) {
  EXPECT_EQ(highest_first({0.5, 2.0, 1.0, 2.0, -1.0}, 3), (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(highest_first({0.5, 2.0}, 5), (std::vector<int64_t>{1, 0}));
  EXPECT_TRUE(highest_first({0.5, 2.0}, 0).empty());
  EXPECT_TRUE(highest_first({}, 3).empty());
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

// ---------------------------------------------------------------- sacreBLEU completeness (mt_metrics)
namespace {
std::string settings(const std::string& signature) { return signature.substr(0, signature.find("version:")); }
MetricOptions opts(const std::string& name) {
  MetricOptions o;
  o.name = name;
  return o;
}
double score_of(const MetricOptions& o, const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  return corpus_score(*make_metric(o), hyps, refs).score;
}
}  // namespace

TEST(MetricsSacrebleu, BleuTokenizersMatchSacrebleuTests) {
  // sacreBLEU test/test_bleu.py, test_corpus_bleu_cases (README example, two reference streams)
  MetricOptions o = opts("bleu");
  o.tokenize = "none";
  EXPECT_NEAR(score_of(o, kSys, kRefs), 49.1919566, 1e-6);
  o.tokenize = "13a";
  EXPECT_NEAR(score_of(o, kSys, kRefs), 48.530827, 1e-6);
  o.tokenize = "intl";
  EXPECT_NEAR(score_of(o, kSys, kRefs), 43.91623493, 1e-6);
  EXPECT_EQ(score_of(opts("bleu"), {"", "", ""}, kRefs), 0.0);  // empty hypotheses are kept, and score 0
  EXPECT_EQ(score_of(opts("bleu"), {"this is a test", "another test"}, {{"ref1", "ref2"}}), 0.0);  // no match at all: 0 (#141)
  EXPECT_EQ(settings(corpus_score(*make_metric(o), kSys, kRefs).signature), "nrefs:2|case:mixed|eff:no|tok:intl|smooth:exp|");
}

TEST(MetricsSacrebleu, TokenizersByHand) {
  EXPECT_EQ(mt_tokenize("Hello, world!", "intl"), "Hello , world !");
  EXPECT_EQ(mt_tokenize("It costs 1,000.5 \xE2\x82\xAC", "intl"), "It costs 1,000.5 \xE2\x82\xAC");       // digits keep , and .; € is a symbol
  EXPECT_EQ(mt_tokenize("Z\xC3\xBCrich\xE2\x80\x94Gen\xC3\xA8ve", "intl"), "Z\xC3\xBCrich \xE2\x80\x94 Gen\xC3\xA8ve");  // em dash (Pd)
  // zh: every CJK character (and full-width punctuation) alone, then the 13a rules without the padding
  EXPECT_EQ(mt_tokenize("\xE6\x88\x91\xE7\x88\xB1\xE5\x8C\x97\xE4\xBA\xAC\xEF\xBC\x8C\xE5\xA5\xBD\xE3\x80\x82Hello, world!", "zh"),
            "\xE6\x88\x91 \xE7\x88\xB1 \xE5\x8C\x97 \xE4\xBA\xAC \xEF\xBC\x8C \xE5\xA5\xBD \xE3\x80\x82 Hello , world !");
  EXPECT_EQ(mt_tokenize("ab c", "char"), "a b   c");  // " ".join(chars): the space is a character too
  EXPECT_EQ(mt_tokenize("a  b,c", "none"), "a  b,c");
  EXPECT_THROW_MSG(mt_tokenize("x", "moses"), ConfigError, "unknown tokenizer 'moses'");
  EXPECT_EQ(unicode_lower("\xC3\x84PFEL ABC"), "\xC3\xA4pfel abc");
  EXPECT_EQ(unicode_split("a\xE3\x80\x80" "b\xC2\xA0" "c d"), (std::vector<std::string>{"a", "b", "c", "d"}));  // U+3000, U+00A0
}

TEST(MetricsSacrebleu, LowercaseAndCharBleu) {
  MetricOptions o = opts("bleu");
  const std::vector<std::string> hyp = {"THE DOG BIT THE MAN ."};
  const std::vector<std::vector<std::string>> ref = {{"the dog bit the man ."}};
  EXPECT_LT(score_of(o, hyp, ref), 10.0);  // only "." matches
  o.lowercase = true;
  EXPECT_NEAR(score_of(o, hyp, ref), 100.0, 1e-9);
  EXPECT_NE(corpus_score(*make_metric(o), hyp, ref).signature.find("case:lc"), std::string::npos);
  MetricOptions c = opts("bleu");
  c.tokenize = "char";
  EXPECT_NEAR(score_of(c, {"abcdef"}, {{"abcdef"}}), 100.0, 1e-9);
}

TEST(MetricsSacrebleu, ChrfPlusPlusMatchesPublishedScores) {
  // Hugging Face chrF metric card (sacreBLEU underneath): chrF++ and lowercased chrF++
  const std::vector<std::string> hyp = {"The relationship between cats and dogs is not exactly friendly.",
                                        "a good bookshop is just a genteel black hole that knows how to read."};
  const std::vector<std::vector<std::string>> ref = {{"The relationship between dogs and cats is not exactly friendly.",
                                                      "A good bookshop is just a genteel Black Hole that knows how to read."}};
  MetricOptions o = opts("chrf");
  o.word_order = 2;
  EXPECT_NEAR(score_of(o, hyp, ref), 82.87263732906315, 1e-9);
  EXPECT_EQ(make_metric(o)->name(), "chrF2++");
  EXPECT_EQ(settings(make_metric(o)->signature(1)), "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|");
  o.lowercase = true;
  EXPECT_NEAR(score_of(o, hyp, ref), 92.12853119829202, 1e-9);
}

TEST(MetricsSacrebleu, ChrfOptionsMatchSacrebleuTests) {
  // sacreBLEU test/test_chrf.py: beta 3 with eps smoothing; keep-whitespace; sentence level
  MetricOptions eps = opts("chrf");
  eps.beta = 3;
  eps.eps_smoothing = true;
  EXPECT_NEAR(score_of(eps, {"aa"}, {{"ab"}}), 8.3333, 1e-4);
  EXPECT_NEAR(score_of(eps, {"a"}, {{"a"}}), 16.6667, 1e-4);
  EXPECT_NEAR(score_of(eps, {"a b c"}, {{"abc"}}), 50.0, 1e-4);
  EXPECT_NEAR(score_of(eps, {"", ""}, {{"reference", "b"}}), 0.0, 1e-4);
  EXPECT_NEAR(score_of(eps, {" risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists ."},
                       {{"risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists ."}}),
              63.361730, 1e-4);
  EXPECT_NEAR(score_of(eps, {" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. "},
                       {{"Das Verh\xC3\xA4ltnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."}}),
              64.1302698, 1e-4);
  MetricOptions eff = opts("chrf");
  eff.beta = 3;
  EXPECT_NEAR(score_of(eff, {"a", "b"}, {{"a", "c"}}), 50.0, 1e-4);
  EXPECT_NEAR(score_of(eff, {"aa"}, {{"ab"}}), 25.0, 1e-4);
  MetricOptions ws = eff;
  ws.whitespace = true;
  EXPECT_NEAR(score_of(ws, {"Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich."},
                      {{"Das Verh\xC3\xA4ltnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."}}),
              67.3481606, 1e-4);
  MetricOptions sent = opts("chrf");
  sent.eps_smoothing = true;
  const auto m = make_metric(sent);
  EXPECT_NEAR(m->sentence_score("Co n\xC3\xA1s nejv\xC3\xAD" "c tr\xC3\xA1p\xC3\xAD, proto\xC5\xBE" "e l\xC3\xA9" "ka\xC5\x99i si vyb\xC3\xADraj\xC3\xAD, kdo bude \xC5\xBE\xC3\xADt a kdo zem\xC5\x99" "e.",
                                {"Nejv\xC3\xAD" "ce smutn\xC3\xAD jsme z toho, \xC5\xBE" "e mus\xC3\xADme rozhodovat o tom, kdo bude \xC5\xBE\xC3\xADt a kdo zem\xC5\x99" "e."}),
              39.14078509, 1e-4);
}

TEST(MetricsSacrebleu, TerMatchesSacrebleuTests) {
  // sacreBLEU test/test_ter.py
  const auto ter = make_metric(opts("ter"));
  EXPECT_NEAR(corpus_score(*ter, {"aaaa bbbb cccc dddd"}, {{"aaaa bbbb cccc dddd"}}).score, 0.0, 1e-9);
  EXPECT_NEAR(corpus_score(*ter, {"dddd eeee ffff"}, {{"aaaa bbbb cccc"}}).score, 100.0, 1e-9);
  EXPECT_NEAR(corpus_score(*ter, {""}, {{"a"}}).score, 100.0, 1e-9);
  EXPECT_NEAR(corpus_score(*ter, {"d e f g h a b c"}, {{"a b c d e f g h"}}).score, 100.0 / 8, 1e-9);  // one shift
  const std::vector<std::string> hyp = {
      "w\xC3\xA4hlen Sie \" Bild neu berechnen , \" um beim \xC3\x84ndern der Bildgr\xC3\xB6\xC3\x9F" "e Pixel hinzuzuf\xC3\xBCgen oder zu entfernen , damit das Bild ungef\xC3\xA4hr dieselbe Gr\xC3\xB6\xC3\x9F" "e aufweist wie die andere Gr\xC3\xB6\xC3\x9F" "e .",
      "wenn Sie alle Aufgaben im aktuellen Dokument aktualisieren m\xC3\xB6" "chten , w\xC3\xA4hlen Sie im Men\xC3\xBC des Aufgabenbedienfelds die Option \" Alle Aufgaben aktualisieren . \"",
      "klicken Sie auf der Registerkarte \" Optionen \" auf die Schaltfl\xC3\xA4" "che \" Benutzerdefiniert \" und geben Sie Werte f\xC3\xBCr \" Fehlerkorrektur-Level \" und \" Y / X-Verh\xC3\xA4ltnis \" ein .",
      "Sie k\xC3\xB6nnen beispielsweise ein Dokument erstellen , das ein Auto \xC3\xBC" "ber die B\xC3\xBChne enth\xC3\xA4lt .",
      "w\xC3\xA4hlen Sie im Dialogfeld \" Neu aus Vorlage \" eine Vorlage aus und klicken Sie auf \" Neu . \""};
  const std::vector<std::string> ref = {
      "w\xC3\xA4hlen Sie \" Bild neu berechnen , \" um beim \xC3\x84ndern der Bildgr\xC3\xB6\xC3\x9F" "e Pixel hinzuzuf\xC3\xBCgen oder zu entfernen , damit die Darstellung des Bildes in einer anderen Gr\xC3\xB6\xC3\x9F" "e beibehalten wird .",
      "wenn Sie alle Aufgaben im aktuellen Dokument aktualisieren m\xC3\xB6" "chten , w\xC3\xA4hlen Sie im Men\xC3\xBC des Aufgabenbedienfelds die Option \" Alle Aufgaben aktualisieren . \"",
      "klicken Sie auf der Registerkarte \" Optionen \" auf die Schaltfl\xC3\xA4" "che \" Benutzerdefiniert \" und geben Sie f\xC3\xBCr \" Fehlerkorrektur-Level \" und \" Y / X-Verh\xC3\xA4ltnis \" niedrigere Werte ein .",
      "Sie k\xC3\xB6nnen beispielsweise ein Dokument erstellen , das ein Auto enthalt , das sich \xC3\xBC" "ber die B\xC3\xBChne bewegt .",
      "w\xC3\xA4hlen Sie im Dialogfeld \" Neu aus Vorlage \" eine Vorlage aus und klicken Sie auf \" Neu . \""};
  EXPECT_NEAR(corpus_score(*ter, hyp, {ref}).score, 13.6, 1e-3);  // realistic WMT dev example
  EXPECT_EQ(settings(ter->signature(1)), "nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|");
}

// Sentences with many repeated words make tercom's shift land inside the moved block, where its
// slices reach past the end of the sentence (Python clamps them); that once threw
// vector::_M_range_insert on a real system's output. TER of any pair is a finite, non-negative rate.
TEST(MetricsSacrebleu, TerShiftsOfRepeatedWordsStayInTheSentence) {
  const auto ter = make_metric(opts("ter"));
  std::mt19937 rng(3);
  const char* words[] = {"a", "b", "c", "d"};
  auto sentence = [&] {
    std::string s;
    for (int i = 0, n = 3 + static_cast<int>(rng() % 12); i < n; ++i) s += std::string(i ? " " : "") + words[rng() % 4];
    return s;
  };
  for (int k = 0; k < 3000; ++k) {
    const std::string h = sentence(), r = sentence();
    double score = -1;
    ASSERT_NO_THROW(score = corpus_score(*ter, {h}, {{r}}).score) << h << " | " << r;
    EXPECT_GE(score, 0.0);
    EXPECT_TRUE(std::isfinite(score));
  }
}

TEST(MetricsSacrebleu, TerSeveralReferencesAndCase) {
  // Hugging Face TER metric card (sacreBLEU underneath, case_sensitive): 62.5, 5 edits, length 8.0
  const std::vector<std::string> hyp = {"does this sentence match??", "what about this sentence?"};
  const std::vector<std::vector<std::string>> refs = {{"does this sentence match", "wHaT aBoUt ThIs SeNtEnCe?"},
                                                      {"does this sentence match!?!", "wHaT aBoUt ThIs SeNtEnCe?"}};
  MetricOptions cs = opts("ter");
  cs.case_sensitive = true;
  const CorpusResult r = corpus_score(*make_metric(cs), hyp, refs);
  EXPECT_NEAR(r.score, 62.5, 1e-9);
  EXPECT_EQ(r.stats[0], 5);
  EXPECT_EQ(r.stats[1], 8.0);
  // sacreBLEU's default lowercases: the second segment matches, one edit in all
  EXPECT_NEAR(score_of(opts("ter"), hyp, refs), 100.0 / 8, 1e-9);
}

TEST(MetricsSacrebleu, SentenceScores) {
  const auto bleu = make_metric(opts("bleu"));
  const auto s = sentence_scores(*bleu, kSys, kRefs);
  ASSERT_EQ(s.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(s[i], sentence_bleu(kSys[i], {kRefs[0][i], kRefs[1][i]}).score, 1e-12);
  EXPECT_NEAR(s[0], 100.0, 1e-9);
  const auto ter = sentence_scores(*make_metric(opts("ter")), {"d e f g h a b c", "x"}, {{"a b c d e f g h", "x"}});
  EXPECT_NEAR(ter[0], 12.5, 1e-9);
  EXPECT_NEAR(ter[1], 0.0, 1e-9);
}

TEST(MetricsSacrebleu, PairedBootstrap) {
  // 200 segments: the baseline gets every fifth segment wrong, system A only one, system B = baseline.
  std::vector<std::string> ref, base, a, b;
  for (int i = 0; i < 200; ++i) {
    const std::string r = "the cat number " + std::to_string(i) + " sat on the mat today";
    ref.push_back(r);
    base.push_back(i % 5 == 0 ? "a dog stood somewhere else" : r);
    a.push_back(i == 7 ? "a dog stood somewhere else" : r);
  }
  b = base;
  const auto bleu = make_metric(opts("bleu"));
  const PairedBootstrapResult r = paired_bootstrap(*bleu, base, {a, b}, {ref});
  EXPECT_EQ(settings(r.signature), "nrefs:1|bs:1000|seed:12345|case:mixed|eff:no|tok:13a|smooth:exp|");
  ASSERT_EQ(r.systems.size(), 2u);
  EXPECT_NEAR(r.systems[0].p_value, 1.0 / 1001, 1e-12);  // every resample favours A
  EXPECT_GT(r.systems[0].score, r.baseline.score + 10);
  EXPECT_NEAR(r.systems[0].mean, r.systems[0].score, 1.0);
  EXPECT_GT(r.baseline.ci, 0.5);
  EXPECT_LT(r.baseline.ci, 10);
  // identical to the baseline: every resampled difference is 0, so none exceeds the actual 0 (as sacreBLEU)
  EXPECT_NEAR(r.systems[1].p_value, 1.0 / 1001, 1e-12);
  EXPECT_DOUBLE_EQ(r.systems[1].mean, r.baseline.mean);
  // one segment fixed and another broken: the same score, not significant
  std::vector<std::string> c = base;
  c[0] = ref[0];
  c[1] = "a dog stood somewhere else";
  EXPECT_GT(paired_bootstrap(*bleu, base, {c}, {ref}).systems[0].p_value, 0.05);
  EXPECT_THROW_MSG(paired_bootstrap(*bleu, base, {{"x"}}, {ref}), DataError, "system 1 has 1 lines");
}

TEST(MetricsSacrebleu, CliTerAndPairedBs) {
  TempDir tmp;
  auto write = [&](const std::string& name, const std::string& text) {
    write_file_atomic(tmp.path + "/" + name, text);
    return tmp.path + "/" + name;
  };
  MetricsRequest req;
  req.kind = "ter";
  req.hyp = write("h.txt", "d e f g h a b c\n");
  req.refs = {write("r.txt", "a b c d e f g h\n")};
  req.sentence = true;
  auto j = nlohmann::json::parse(run_metrics(req));
  EXPECT_NEAR(j["score"].get<double>(), 12.5, 1e-9);
  EXPECT_EQ(j["sentences"].size(), 1u);
  MetricsRequest bs;
  bs.kind = "paired-bs";
  bs.baseline = req.hyp;
  bs.systems = {req.refs[0]};
  bs.refs = req.refs;
  bs.metrics = {"bleu", "chrf", "ter"};
  bs.n_bootstrap = 50;
  j = nlohmann::json::parse(run_metrics(bs));
  EXPECT_TRUE(j["metrics"].contains("TER"));
  EXPECT_NEAR(j["metrics"]["TER"]["systems"][0]["score"].get<double>(), 0.0, 1e-9);
  bs.metrics = {"meteor"};
  EXPECT_THROW_MSG(run_metrics(bs), ConfigError, "unknown metric 'meteor'");
}
