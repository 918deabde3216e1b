// Error analysis: fit diagnosis on constructed loss curves, classification errors and hard-example
// mining on hand-written prediction files (every expected value counted by hand), and mining that
// changes the targeted error of a fine-tuned classifier.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/eval/analysis.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/model/io.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace dsforge;

namespace {

std::string write_metrics(const std::string& dir, const std::vector<std::pair<int64_t, double>>& train,
                          const std::vector<std::pair<int64_t, double>>& val, const std::vector<int64_t>& rollbacks = {}) {
  std::string s;
  for (const auto& [step, loss] : train)
    s += nlohmann::json{{"kind", "train"}, {"step", step}, {"loss", loss}, {"grad_norm", 1.0}}.dump() + "\n";
  for (const auto& [step, loss] : val) s += nlohmann::json{{"kind", "eval"}, {"step", step}, {"val_loss", loss}}.dump() + "\n";
  for (int64_t step : rollbacks) s += nlohmann::json{{"kind", "rollback"}, {"step", step}, {"loss", 50.0}}.dump() + "\n";
  const std::string path = path_join(dir, "metrics.jsonl");
  write_file_atomic(path, s);
  return path;
}

const eval::Finding* find(const std::vector<eval::Finding>& fs, const std::string& kind) {
  for (const auto& f : fs)
    if (f.kind == kind) return &f;
  return nullptr;
}

}  // namespace

TEST(Analysis, FitDiagnosisNamesOverfittingWithTheEvidence) {
  TempDir dir;
  std::vector<std::pair<int64_t, double>> train;
  for (int64_t s = 10; s <= 100; s += 10) train.emplace_back(s, 4.0 - 0.03 * static_cast<double>(s) / 10.0);  // flat-ish fall
  const auto path = write_metrics(dir.path, train, {{20, 3.5}, {40, 3.2}, {60, 3.3}, {80, 3.45}, {100, 3.6}});
  const auto fs = eval::diagnose_fit(path);
  const eval::Finding* f = find(fs, "over-fitting");
  ASSERT_NE(f, nullptr) << eval::analysis_text(fs, nullptr, nullptr);
  EXPECT_NE(f->evidence.find("rose from 3.2 at step 40 to 3.6 at step 100"), std::string::npos) << f->evidence;
  EXPECT_NE(f->suggestion.find("early_stopping"), std::string::npos);
  EXPECT_EQ(find(fs, "healthy"), nullptr);
}

TEST(Analysis, FitDiagnosisNamesInstabilityUnderfittingAndHealth) {
  TempDir dir;
  {  // a spike at step 60 and a rollback
    std::vector<std::pair<int64_t, double>> train;
    for (int64_t s = 10; s <= 100; s += 10) train.emplace_back(s, s == 60 ? 9.0 : 3.0 + 1.0 / static_cast<double>(s));
    const auto fs = eval::diagnose_fit(write_metrics(dir.path, train, {}, {70}));
    const eval::Finding* f = find(fs, "instability");
    ASSERT_NE(f, nullptr);
    EXPECT_NE(f->evidence.find("step 60 loss 9"), std::string::npos) << f->evidence;
    EXPECT_NE(f->evidence.find("rollback at step 70"), std::string::npos) << f->evidence;
  }
  {  // still falling 20% over the last fifth
    std::vector<std::pair<int64_t, double>> train;
    for (int64_t s = 10; s <= 100; s += 10) train.emplace_back(s, 6.0 - 0.3 * static_cast<double>(s / 10));
    const auto fs = eval::diagnose_fit(write_metrics(dir.path, train, {}));
    const eval::Finding* f = find(fs, "under-fitting");
    ASSERT_NE(f, nullptr) << eval::analysis_text(fs, nullptr, nullptr);
    // 3.6 at step 80 -> 3.0 at step 100: 16.7%.
    EXPECT_NE(f->evidence.find("16.67% over the last 20 steps"), std::string::npos) << f->evidence;
  }
  {  // flattened, validation falling
    std::vector<std::pair<int64_t, double>> train;
    for (int64_t s = 10; s <= 100; s += 10) train.emplace_back(s, 3.0 + 1.0 / static_cast<double>(s));
    const auto fs = eval::diagnose_fit(write_metrics(dir.path, train, {{50, 3.2}, {100, 3.1}}));
    ASSERT_EQ(fs.size(), 1u) << eval::analysis_text(fs, nullptr, nullptr);
    EXPECT_EQ(fs[0].kind, "healthy");
  }
  write_file_atomic(path_join(dir.path, "bad.jsonl"), "{\"kind\":\"train\",\"step\":1,\"loss\":2}\nnot json\n");
  EXPECT_THROW_MSG(eval::diagnose_fit(path_join(dir.path, "bad.jsonl")), DataError, "bad.jsonl:2: not a JSON object");
}

TEST(Analysis, VerdictsMatchTheNumbers) {
  TempDir dir;
  {  // 3 logged points: no trend can be judged, and the verdict says so instead of "healthy"
    const auto fs = eval::diagnose_fit(write_metrics(dir.path, {{5, 6.0}, {10, 5.5}, {15, 5.4}}, {}));
    ASSERT_EQ(fs.size(), 1u);
    EXPECT_EQ(fs[0].kind, "too few points to judge");
    EXPECT_NE(fs[0].evidence.find("only 3 logged training points"), std::string::npos) << fs[0].evidence;
  }
  {  // worse than the unigram baseline: under-fitting, with the ratio (614.67 / 327.42 = 1.877...)
    const std::string eval_json = path_join(dir.path, "eval.json");
    write_file_atomic(eval_json, R"({"val_perplexity": 614.67, "unigram_perplexity": 327.42})");
    std::vector<std::pair<int64_t, double>> train;
    for (int64_t s = 1; s <= 10; ++s) train.emplace_back(s, 6.5 + 0.001 / static_cast<double>(s));
    const auto fs = eval::diagnose_fit(write_metrics(dir.path, train, {}), eval_json);
    const eval::Finding* f = find(fs, "under-fitting");
    ASSERT_NE(f, nullptr) << eval::analysis_text(fs, nullptr, nullptr);
    EXPECT_NE(f->evidence.find("1.877x higher than the unigram baseline's 327.4"), std::string::npos) << f->evidence;
    EXPECT_EQ(find(fs, "healthy"), nullptr);
  }
  {  // the loss fell 10% per interval until the cosine cut the learning rate, then went flat
    std::string s;
    const double losses[] = {5.0, 4.5, 4.05, 3.645, 3.3, 3.29, 3.285, 3.283, 3.282, 3.281};
    const double lrs[] = {1e-3, 1e-3, 1e-3, 1e-3, 4e-4, 2e-4, 1e-4, 1e-4, 1e-4, 1e-4};
    for (int i = 0; i < 10; ++i)
      s += nlohmann::json{{"kind", "train"}, {"step", 10 * (i + 1)}, {"loss", losses[i]}, {"lr", lrs[i]}}.dump() + "\n";
    write_file_atomic(path_join(dir.path, "m2.jsonl"), s);
    const auto fs = eval::diagnose_fit(path_join(dir.path, "m2.jsonl"));
    const eval::Finding* f = find(fs, "under-fitting");
    ASSERT_NE(f, nullptr) << eval::analysis_text(fs, nullptr, nullptr);
    // The cut is at step 50 (lr 4e-4 <= half of 1e-3); two intervals before: 4.05 at step 30 -> 3.3 at 50, 18.52%.
    EXPECT_NE(f->evidence.find("fell 18.52% over the 20 steps before the learning rate dropped below half its peak at step 50"),
              std::string::npos) << f->evidence;
    EXPECT_NE(f->suggestion.find("the learning-rate schedule ended while the loss was still falling: train longer"),
              std::string::npos);
  }
}

TEST(Analysis, ClassificationErrorsAndHardExampleMining) {
  TempDir dir;
  const std::string preds = path_join(dir.path, "predictions.tsv");
  write_file_atomic(preds,
                    "text\tgold\tpred\tloss\n"
                    "a cat\tanimal\tanimal\t0.1\n"
                    "a rose\tplant\tanimal\t2.5\n"
                    "a saw\ttool\tplant\t3.0\n"
                    "a dog\tanimal\tanimal\t0.2\n"
                    "grass\tplant\tanimal\t1.5\n"
                    "a drill\ttool\ttool\t0.4\n");
  const auto c = eval::classification_errors(preds, 2);
  ASSERT_EQ(c.hardest.size(), 2u);
  EXPECT_EQ(c.hardest[0][0], "a saw");
  EXPECT_EQ(c.hardest[1][0], "a rose");
  ASSERT_GE(c.confused.size(), 2u);
  EXPECT_EQ(c.confused[0], (std::pair<std::string, int64_t>{"plant -> animal", 2}));
  EXPECT_EQ(c.confused[1], (std::pair<std::string, int64_t>{"tool -> plant", 1}));
  ASSERT_EQ(c.per_class_error.size(), 3u);
  EXPECT_EQ(c.per_class_error[0].first, "plant");  // 2 of 2 wrong
  EXPECT_DOUBLE_EQ(c.per_class_error[0].second, 1.0);
  EXPECT_EQ(c.per_class_error[1].first, "tool");   // 1 of 2
  EXPECT_DOUBLE_EQ(c.per_class_error[1].second, 0.5);
  EXPECT_DOUBLE_EQ(c.per_class_error[2].second, 0.0);

  // The hardest third (2 of 6: losses 3.0 and 2.5) appear 3 times each: 6 + 2 x 2 lines.
  const std::string out = path_join(dir.path, "reweighted.tsv");
  const auto m = eval::mine_hard_examples(preds, out, 1.0 / 3, 3);
  EXPECT_EQ(m.examples, 6);
  EXPECT_EQ(m.hard, 2);
  EXPECT_EQ(m.written, 10);
  EXPECT_DOUBLE_EQ(m.loss_threshold, 2.5);
  const auto train = tasks::read_tsv_examples(out);
  ASSERT_EQ(train.size(), 10u);
  int saw = 0, rose = 0, cat = 0;
  for (const auto& e : train) {
    saw += e.text == "a saw" && e.label == "tool";
    rose += e.text == "a rose";
    cat += e.text == "a cat";
  }
  EXPECT_EQ(saw, 3);
  EXPECT_EQ(rose, 3);
  EXPECT_EQ(cat, 1);

  EXPECT_THROW_MSG(eval::mine_hard_examples(preds, out, 0.0, 3), ConfigError, "fraction");
  EXPECT_THROW_MSG(eval::mine_hard_examples(preds, out, 0.1, 1), ConfigError, "factor");
  write_file_atomic(path_join(dir.path, "bad.tsv"), "text\tgold\tpred\tloss\na cat\tanimal\tanimal\tlow\n");
  EXPECT_THROW_MSG(eval::classification_errors(path_join(dir.path, "bad.tsv"), 3), DataError, "bad.tsv:2: loss 'low'");
  write_file_atomic(path_join(dir.path, "noheader.tsv"), "a cat\tanimal\n");
  EXPECT_THROW_MSG(eval::classification_errors(path_join(dir.path, "noheader.tsv"), 3), DataError, "noheader.tsv:1: expected the header");
}

// A rare class the first fine-tuning neglects: mining repeats its (hard) examples, and fine-tuning
// again on the re-weighted file raises that class's recall.
TEST(Analysis, HardExampleMiningRaisesTheRecallOfTheNeglectedClass) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::vector<std::string>>> classes = {
      {"animal", {"cat", "dog", "horse"}}, {"plant", {"tree", "rose", "grass"}}, {"tool", {"hammer", "saw", "drill"}}};
  const std::vector<std::string> filler = {"the", "a", "big", "small", "old", "new", "red", "blue", "near", "far"};
  std::mt19937 rng(11);
  tasks::ClassifyData data;
  data.name = "imbalanced";
  auto make = [&](size_t c) {
    std::vector<std::string> words;
    for (int k = 0; k < 5; ++k) words.push_back(filler[rng() % filler.size()]);
    words.insert(words.begin() + static_cast<long>(rng() % 6), classes[c].second[rng() % 3]);
    std::string text;
    for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
    return tasks::Example{text, classes[c].first};
  };
  for (int i = 0; i < 300; ++i) data.train.push_back(make(i % 20 == 0 ? 2 : static_cast<size_t>(i % 2)));  // 5% tools
  for (int i = 0; i < 90; ++i) data.test.push_back(make(static_cast<size_t>(i % 3)));
  std::vector<std::string> docs;
  for (const auto& e : data.train) docs.push_back(e.text);
  const std::string model_dir = save_tiny_model(dir.path, docs);

  tasks::FinetuneOptions opt;
  opt.epochs = 2;
  opt.batch = 16;
  opt.lr = 2e-3;
  const std::string first = path_join(dir.path, "first");
  const auto r1 = tasks::finetune_classifier(model_dir, data, opt, first);
  const std::string mined = path_join(dir.path, "mined.tsv");
  const std::string text = eval::analyze_finetune(first, 5, mined, 0.1, 6);
  EXPECT_NE(text.find("Most confused pairs"), std::string::npos);
  auto analysis = nlohmann::json::parse(read_file(path_join(first, "analysis.json")));
  EXPECT_EQ(analysis["mining"]["hard"], 30);
  tasks::ClassifyData again = data;
  again.train = tasks::read_tsv_examples(mined);
  EXPECT_EQ(again.train.size(), 300u + 30u * 5u);
  const auto r2 = tasks::finetune_classifier(model_dir, again, opt, path_join(dir.path, "second"));
  auto recall = [](const tasks::FinetuneResult& r, const std::string& label) {
    for (size_t c = 0; c < r.model.labels.size(); ++c)
      if (r.model.labels[c] == label) return r.model.per_class[c].recall;
    return -1.0;
  };
  EXPECT_GT(recall(r2, "tool"), recall(r1, "tool") + 0.2)
      << "before:\n" << tasks::finetune_table(r1) << "after:\n" << tasks::finetune_table(r2);
  // finetune.json carries what the report plots; the report of the folder shows it and the analysis.
  auto j = nlohmann::json::parse(read_file(path_join(first, "finetune.json")));
  EXPECT_EQ(j["confusion"]["labels"].size(), 3u);
  EXPECT_EQ(j["per_class"].size(), 3u);
  const std::string html_path = report::write_run_report(first);
  const std::string html = read_file(html_path);
  for (const char* part : {"F1 per class", "Confusion matrix", "gold tool, predicted", "Most confused pairs", "Hard-example mining"})
    EXPECT_NE(html.find(part), std::string::npos) << part;
  const BrowserRender page = render_in_chromium(html_path, dir.path);
  if (!page.available) GTEST_SKIP() << "chromium not installed (scripts/setup.sh installs it)";
  ASSERT_EQ(page.exit_code, 0) << page.console;
  EXPECT_EQ(page.charts_total, 2);
  EXPECT_EQ(page.charts_rendered, 2);
  EXPECT_EQ(page.console.find("CONSOLE"), std::string::npos) << page.console;
}
