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
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/back_translate.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/tasks/regress.h"
#include "dsforge/tasks/seq2seq.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"
#include "tiny_model.h"

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
  const std::string model_dir = save_tiny_model(dir.path, docs);

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

// Beam search against exhaustive search: with a vocabulary of 5 and 3 new tokens there are 125
// continuations; a beam that wide must return the one with the highest summed log-probability
// (computed here by full forward passes, no cache), and beam 1 must equal greedy decoding.
TEST(BeamSearch, WideBeamFindsTheExhaustiveBestAndBeamOneIsGreedy) {
  for (const char* preset : {"nano", "gpt2-tiny", "lstm-tiny"}) {
    SCOPED_TRACE(preset);
    model::ModelConfig mc = model::model_config_from_preset(preset);
    mc.vocab_size = 5;
    model::CausalLm m = model::build_model(mc);
    m->init_weights(0.6, 3);  // large weights: peaked, position-dependent distributions
    m->eval();
    const std::vector<int64_t> prompt = {1, 3, 2};
    at::NoGradGuard ng;
    double best = -INFINITY;
    std::vector<int64_t> best_seq;
    for (int64_t a = 0; a < 5; ++a)
      for (int64_t b = 0; b < 5; ++b)
        for (int64_t c = 0; c < 5; ++c) {
          std::vector<int64_t> seq = prompt;
          for (int64_t t : {a, b, c}) seq.push_back(t);
          at::Tensor logp = at::log_softmax(m->forward(at::tensor(seq, at::kLong).unsqueeze(0)).to(at::kDouble), -1)[0];
          double lp = 0;
          for (int64_t i = 0; i < 3; ++i) lp += logp[2 + i][seq[3 + i]].item<double>();
          if (lp > best) {
            best = lp;
            best_seq = {a, b, c};
          }
        }
    model::BeamOptions o;
    o.max_new_tokens = 3;
    o.beam = 125;
    const auto wide = model::beam_search(m, prompt, o);
    EXPECT_EQ(wide.tokens, best_seq);
    EXPECT_NEAR(wide.log_prob, best, 1e-4);
    o.beam = 1;
    model::SampleOptions g;
    g.max_new_tokens = 3;
    EXPECT_EQ(model::beam_search(m, prompt, o).tokens, model::generate(m, {prompt}, g)[0]);
    // A narrow beam never beats the exhaustive optimum.
    o.beam = 2;
    EXPECT_LE(model::beam_search(m, prompt, o).log_prob, best + 1e-4);
  }
}

TEST(BeamSearch, StopTokensEndHypotheses) {
  model::ModelConfig mc = model::model_config_from_preset("nano");
  mc.vocab_size = 5;
  model::CausalLm m = model::build_model(mc);
  m->init_weights(0.6, 5);
  model::BeamOptions o;
  o.max_new_tokens = 6;
  o.beam = 3;
  o.stop_tokens = {0, 1, 2, 3, 4};  // every token stops: the result is empty, scored by its one stop token
  const auto r = model::beam_search(m, {1, 2}, o);
  EXPECT_TRUE(r.tokens.empty());
  at::NoGradGuard ng;
  m->eval();
  const double top = at::log_softmax(m->forward(at::tensor(std::vector<int64_t>{1, 2}, at::kLong).unsqueeze(0)), -1)[0][1].max().item<double>();
  EXPECT_NEAR(r.log_prob, top, 1e-4);
}

// A tiny model fine-tuned on a fixed word -> definition dictionary reproduces it under greedy and
// beam decoding (BLEU near 100), far above the copy-source baseline.
TEST(Seq2Seq, FineTunedModelLearnsADictionaryAboveCopySource) {
  TempDir dir;
  const std::vector<tasks::Pair> dict = {{"cat", "a small animal that purrs"},     {"oak", "a tall tree with acorns"},
                                  {"saw", "a tool with a toothed blade"},    {"rain", "water falling from clouds"},
                                  {"bread", "food made of flour and water"}, {"river", "a large stream of water"}};
  tasks::Seq2SeqData data;
  data.name = "dictionary";
  for (int rep = 0; rep < 40; ++rep)
    for (const auto& p : dict) data.train.push_back(p);
  data.test = dict;
  std::vector<std::string> docs;
  for (const auto& p : dict) docs.push_back(p.source + " " + p.target);
  const std::string model_dir = save_tiny_model(dir.path, docs);

  tasks::Seq2SeqOptions opt;
  opt.epochs = 6;
  opt.lr = 3e-3;
  opt.beam = 3;
  const std::string out = path_join(dir.path, "out");
  const auto r = tasks::finetune_seq2seq(model_dir, data, opt, out);
  EXPECT_GT(r.scores.at("greedy").bleu, 90) << tasks::seq2seq_table(r);
  EXPECT_GT(r.scores.at("beam").bleu, 90) << tasks::seq2seq_table(r);
  EXPECT_LT(r.scores.at("copy-source").bleu, 5) << tasks::seq2seq_table(r);
  EXPECT_EQ(read_file(path_join(out, "reference.txt")).substr(0, 26), "a small animal that purrs\n");
  auto j = nlohmann::json::parse(read_file(path_join(out, "seq2seq.json")));
  EXPECT_TRUE(j.contains("copy-source"));
  EXPECT_NE(j["bleu_signature"].get<std::string>().find("tok:13a"), std::string::npos);
  const std::string html = report::render_run_report(out);  // a generation folder has its own report
  EXPECT_NE(html.find("Generation: dictionary"), std::string::npos);
  EXPECT_NE(html.find("a small animal that purrs"), std::string::npos);
}

TEST(Seq2Seq, PaddingReferenceSetsChangesNoScoreAndABetterReferenceCounts) {
  const std::vector<std::string> hyps = {"the cat sat on the mat", "a dog ran in the park today"};
  const auto one = tasks::score_generation(hyps, {{"the cat sat on a mat"}, {"a dog ran in a park"}}, true);
  const auto padded = tasks::score_generation(hyps, {{"the cat sat on a mat", "the cat sat on a mat"},
                                                     {"a dog ran in a park"}}, true);
  EXPECT_DOUBLE_EQ(one.bleu, padded.bleu);
  EXPECT_DOUBLE_EQ(one.chrf, padded.chrf);
  EXPECT_DOUBLE_EQ(one.rougeL, padded.rougeL);
  const auto better = tasks::score_generation(hyps, {{"the cat sat on a mat", "the cat sat on the mat"},
                                                     {"a dog ran in a park"}}, true);
  EXPECT_GT(better.bleu, one.bleu);
  EXPECT_GT(better.rouge1, one.rouge1);
  TempDir dir;
  write_file_atomic(path_join(dir.path, "refs.tsv"), "id1\tfirst ref\tsecond ref\nid2\tonly one\n");
  const auto refs = tasks::read_references(path_join(dir.path, "refs.tsv"), /*id_column=*/true);
  EXPECT_EQ(refs, (std::vector<std::vector<std::string>>{{"first ref", "second ref"}, {"only one"}}));
  write_file_atomic(path_join(dir.path, "bad.tsv"), "id1\tref\nid2\n");
  EXPECT_THROW_MSG(tasks::read_references(path_join(dir.path, "bad.tsv"), true), DataError, "bad.tsv:2: no reference");
}

TEST(Seq2Seq, ParallelFilesMustAlign) {
  TempDir dir;
  const std::string s = path_join(dir.path, "a.en"), t = path_join(dir.path, "a.de");
  write_file_atomic(s, "a dog\na cat\n");
  write_file_atomic(t, "ein Hund\n");
  EXPECT_THROW_MSG(tasks::read_parallel(s, t), DataError, "a.en has 2 lines but");
  write_file_atomic(t, "ein Hund\n\n");
  EXPECT_THROW_MSG(tasks::read_parallel(s, t), DataError, "a.de:2: empty line");
  write_file_atomic(t, "ein Hund\neine Katze\n");
  EXPECT_EQ(tasks::read_parallel(s, t).size(), 2u);
}

TEST(BackTranslate, DictionaryModelsRecoverSourcesAndTheFiltersCountWhatTheyDrop) {
  TempDir dir;
  const std::vector<tasks::Pair> dict = {{"cat", "a small animal that purrs"},     {"oak", "a tall tree with acorns"},
                                         {"saw", "a tool with a toothed blade"},    {"rain", "water falling from clouds"},
                                         {"bread", "food made of flour and water"}, {"river", "a large stream of water"}};
  std::vector<std::string> docs;
  for (const auto& p : dict) docs.push_back(p.source + " " + p.target);
  const std::string base = save_tiny_model(dir.path, docs);
  // word -> definition (forward) and definition -> word (reverse), saved by finetune --out as DIR/model.
  tasks::Seq2SeqData fwd, rev;
  fwd.name = "forward";
  rev.name = "reverse";
  for (int rep = 0; rep < 40; ++rep)
    for (const auto& p : dict) {
      fwd.train.push_back(p);
      rev.train.push_back({p.target, p.source});
    }
  fwd.test = {dict[0]};
  rev.test = {{dict[0].target, dict[0].source}};
  tasks::Seq2SeqOptions opt;
  opt.epochs = 6;
  opt.lr = 3e-3;
  opt.beam = 0;
  tasks::finetune_seq2seq(base, fwd, opt, path_join(dir.path, "fwd"));
  tasks::finetune_seq2seq(base, rev, opt, path_join(dir.path, "rev"));
  const std::string fwd_model = path_join(dir.path, "fwd/model"), rev_model = path_join(dir.path, "rev/model");

  // Batched greedy decoding (left-padded, mixed lengths) equals one sentence at a time and beam search.
  const tasks::Translator reverse(rev_model);
  std::vector<std::string> defs, words;
  for (const auto& p : dict) {
    defs.push_back(p.target);
    words.push_back(p.source);
  }
  tasks::TranslateOptions one, all, beam;
  one.batch = 1;
  all.batch = 6;
  beam.beam = 3;
  EXPECT_EQ(reverse.translate(defs, all), words);
  EXPECT_EQ(reverse.translate(defs, one), words);
  EXPECT_EQ(reverse.translate(defs, beam), words);
  tasks::TranslateOptions sample;
  sample.temperature = 1.0;
  sample.seed = 3;
  EXPECT_EQ(reverse.translate(defs, sample), reverse.translate(defs, sample));  // seeded

  // Monolingual "target" text: the six definitions, a blank line and one the models cannot round-trip.
  const std::string mono = path_join(dir.path, "mono.txt");
  std::string text;
  for (const auto& d : defs) text += d + "\n";
  text += "\nzebra stripes glow everywhere tonight\n";
  write_file_atomic(mono, text);
  tasks::BackTranslateOptions bt;
  bt.decode.temperature = 0;  // greedy
  bt.max_ratio = 0;
  bt.round_trip_model = fwd_model;
  bt.min_chrf = 50;
  bt.chunk = 4;  // two chunks
  const auto st = tasks::back_translate(rev_model, mono, path_join(dir.path, "bt"), bt);
  EXPECT_EQ(st.lines, 7);
  EXPECT_EQ(st.blank, 1);
  EXPECT_EQ(st.dropped_chrf, 1);
  EXPECT_EQ(st.kept, 6);
  EXPECT_EQ(read_file(path_join(dir.path, "bt/source.txt")), "cat\noak\nsaw\nrain\nbread\nriver\n");
  EXPECT_EQ(read_file(path_join(dir.path, "bt/target.txt")), text.substr(0, text.find("\n\n") + 1));
  EXPECT_NE(read_file(path_join(dir.path, "bt/dropped.tsv")).find("\tzebra stripes glow everywhere tonight\n"), std::string::npos);
  const auto j = nlohmann::json::parse(read_file(path_join(dir.path, "bt/back_translate.json")));
  EXPECT_EQ(j["kept"], 6);
  EXPECT_EQ(j["dropped_chrf"], 1);
  // The kept pairs' round trips are exact (chrF 100); the mean is over all seven scored lines.
  EXPECT_GT(j["mean_round_trip_chrf"].get<double>(), 6 * 100.0 / 7);

  // Length ratio, hand-counted: a one-word source against definitions of 5, 5, 6, 4, 6, 5 words.
  EXPECT_DOUBLE_EQ(tasks::word_length_ratio("cat", "a small animal that purrs"), 5.0);
  EXPECT_DOUBLE_EQ(tasks::word_length_ratio("", "  two words "), 2.0);
  bt.round_trip_model.clear();
  bt.min_chrf = 0;
  bt.max_ratio = 4.5;
  bt.max_lines = 6;
  bt.tag = "<bt>";  // tagged back-translation: the ratio is measured on the untagged source
  const auto ratio = tasks::back_translate(rev_model, mono, path_join(dir.path, "bt2"), bt);
  EXPECT_EQ(ratio.lines, 6);
  EXPECT_EQ(ratio.dropped_ratio, 5);
  EXPECT_EQ(read_file(path_join(dir.path, "bt2/source.txt")), "<bt> rain\n");

  // data augment's back-translation paraphrases: definition -> word -> definition returns the six
  // known definitions unchanged (dropped as identical); the unknown line comes back as another one.
  RunConfig cfg;
  cfg.augment.copies = 0;
  cfg.augment.bt_models = {rev_model, fwd_model};
  cfg.augment.bt_temperature = 0;
  validate(cfg);
  const std::string augmented = path_join(dir.path, "augmented.txt");
  const auto counts = pipeline::augment_file(cfg, mono, augmented);
  EXPECT_EQ(counts.documents, 7);
  EXPECT_EQ(counts.bt_dropped_identical, 6);
  EXPECT_EQ(counts.bt_copies, 1);
  EXPECT_EQ(counts.eda_copies, 0);
  const std::string paraphrase = read_file(augmented);
  EXPECT_TRUE(std::find(defs.begin(), defs.end(), paraphrase.substr(0, paraphrase.size() - 1)) != defs.end()) << paraphrase;
  const auto manifest = nlohmann::json::parse(read_file(augmented + ".manifest.json"));
  EXPECT_EQ(manifest["back_translated_copies"], 1);
  EXPECT_EQ(manifest["back_translation_dropped_identical"], 6);
  cfg.augment.bt_models = {rev_model};
  EXPECT_THROW_MSG(validate(cfg), ConfigError, "augment.bt_models");

  // Bad input and settings.
  write_file_atomic(path_join(dir.path, "blank.txt"), "\n  \n");
  EXPECT_THROW_MSG(tasks::back_translate(rev_model, path_join(dir.path, "blank.txt"), path_join(dir.path, "bt3"), bt), DataError,
                   "blank.txt: no text to back-translate");
  bt.min_chrf = 40;
  EXPECT_THROW_MSG(tasks::back_translate(rev_model, mono, path_join(dir.path, "bt3"), bt), ConfigError, "--round-trip-model");
  bt.min_chrf = 0;
  bt.max_ratio = 0.5;
  EXPECT_THROW_MSG(tasks::back_translate(rev_model, mono, path_join(dir.path, "bt3"), bt), ConfigError, "max ratio 0.5");
  EXPECT_THROW_MSG(tasks::Translator(path_join(dir.path, "missing")), Error, "missing");
}
