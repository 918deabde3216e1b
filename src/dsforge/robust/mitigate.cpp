#include <algorithm>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/counterfactual.h"
#include "dsforge/report/html_report.h"
#include "dsforge/robust/fairness.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/tasks/text_classifier.h"

namespace dsforge::robust {

void write_fairness_outputs(const std::string& out_dir, const nlohmann::ordered_json& j, const std::string& body_html) {
  make_dirs(out_dir);
  write_file_atomic(path_join(out_dir, "fairness.json"), j.dump(2) + "\n");
  write_file_atomic(path_join(out_dir, "fairness.html"), report::html_page("Fairness", body_html));
}

namespace {

double accuracy(const tasks::TextClassifier& c, const std::vector<tasks::Example>& test) {
  std::vector<std::string> texts;
  for (const auto& e : test) texts.push_back(e.text);
  const std::vector<std::string> pred = c.predict(texts);
  int64_t correct = 0;
  for (size_t i = 0; i < test.size(); ++i) correct += pred[i] == test[i].label;
  return static_cast<double>(correct) / static_cast<double>(std::max<size_t>(test.size(), 1));
}

}  // namespace

ClassifierFairness classifier_fairness(const std::string& model_dir, const std::string& data, const data::TermSwapper& swapper,
                                       bool groups, const std::string& positive_in) {
  const tasks::TextClassifier cls = tasks::load_text_classifier(model_dir);
  std::vector<std::string> texts;
  std::vector<GroupExample> grouped;
  if (groups) {
    grouped = read_group_examples(data);
    for (const auto& e : grouped) texts.push_back(e.text);
  } else {
    for (const auto& e : tasks::read_tsv_examples(data)) texts.push_back(e.text);
  }
  const CounterfactualResult r = counterfactual_fairness(cls, texts, swapper);
  ClassifierFairness out;
  out.summary = fmt("counterfactual token fairness: ", r.mentioning, " of ", r.examples, " texts mention a term; mean gap ", r.mean_gap,
                    ", max ", r.max_gap, ", ", 100 * r.flip_rate, "% of predictions flip\n");
  out.json = {{"model", model_dir}, {"data", data}, {"counterfactual", counterfactual_json(r)}};
  out.html = counterfactual_html({{model_dir, r}});
  if (!groups) return out;
  const std::string positive = positive_in.empty() ? cls.labels().back() : positive_in;
  if (cls.label_index(positive) < 0) throw ConfigError(fmt("fairness counterfactual: --positive '", positive, "' is not a label of ", model_dir));
  const GroupFairness g = group_fairness(cls.predict(texts), grouped, positive);
  out.summary += fmt("group fairness ('", positive, "' positive): demographic parity difference ", g.demographic_parity_difference,
                     ", equalised-odds difference ", g.equalized_odds_difference, "\n");
  for (const auto& gr : g.groups)
    out.summary += fmt("  ", gr.name, ": n=", gr.n, " positive rate ", gr.positive_rate, ", TPR ", gr.tpr, ", FPR ", gr.fpr, ", accuracy ",
                       gr.accuracy, "\n");
  out.json["groups"] = group_json(g);
  out.html += group_html(g);
  return out;
}

MitigationResult mitigate_classifier(const std::string& model_dir, const tasks::ClassifyData& data, const data::TermSwapper& swapper,
                                     const std::string& out_dir, const tasks::FinetuneOptions& finetune, const std::string& method,
                                     double clp_weight, const std::string& baseline_in) {
  tasks::FinetuneOptions mitigated = finetune;
  tasks::ClassifyData train = data;
  if (method == "cda") {
    int64_t added = 0;
    for (const auto& e : data.train)
      if (swapper.mentions(e.text) > 0) train.train.push_back({swapper.swap(e.text), e.label}), ++added;
    log_info("fairness: counterfactual data augmentation added ", added, " copies to ", data.train.size(), " training texts");
    train.name += "+cda";
  } else if (method == "clp") {
    if (!(clp_weight > 0)) throw ConfigError(fmt("fairness train: --clp-weight ", clp_weight, ": expected a weight > 0"));
    mitigated.counterfactual = [&swapper](const std::string& t) { return swapper.swap(t); };
    mitigated.clp_weight = clp_weight;
  } else {
    throw ConfigError(fmt("fairness train: mitigation '", method, "': expected cda or clp"));
  }
  std::string baseline = baseline_in;
  if (baseline.empty()) {
    baseline = path_join(out_dir, "baseline");
    log_info("fairness: the baseline (plain fine-tuning) -> ", baseline);
    tasks::finetune_classifier(model_dir, data, finetune, baseline);
  }
  const std::string mitigated_dir = path_join(out_dir, "mitigated");
  log_info("fairness: fine-tuning with ", method, " -> ", mitigated_dir);
  tasks::finetune_classifier(model_dir, train, mitigated, mitigated_dir);

  std::vector<std::string> texts;
  for (const auto& e : data.test) texts.push_back(e.text);
  MitigationResult r;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  auto measure = [&](const std::string& name, const std::string& dir) {
    const tasks::TextClassifier c = tasks::load_text_classifier(dir);
    r.rows.push_back({name, counterfactual_fairness(c, texts, swapper)});
    r.accuracy.push_back(accuracy(c, data.test));
    nlohmann::ordered_json row = {{"name", name}, {"model", dir}, {"accuracy", r.accuracy.back()}};
    row.update(counterfactual_json(r.rows.back().second));
    rows.push_back(row);
  };
  if (baseline != "none") measure("baseline", baseline);
  measure(method == "cda" ? "counterfactual data augmentation" : fmt("logit pairing (weight ", clp_weight, ")"), mitigated_dir);
  r.json = {{"task", data.name}, {"mitigation", method}, {"results", rows}};
  std::string acc = "<h3>Accuracy</h3>\n<table><tr><th>model</th><th>test accuracy</th></tr>\n";
  for (size_t i = 0; i < r.rows.size(); ++i)
    acc += fmt("<tr><td>", report::html_escape(r.rows[i].first), "</td><td>", 100 * r.accuracy[i], "%</td></tr>\n");
  write_fairness_outputs(out_dir, r.json, counterfactual_html(r.rows) + acc + "</table>\n");
  return r;
}

}  // namespace dsforge::robust
