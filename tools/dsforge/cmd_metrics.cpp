// dsforge metrics bleu|chrf|rouge|classification|regression
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/eval/metrics_files.h"

namespace dsforge::cli {

void add_metrics_commands(CLI::App& app, Context& ctx) {
  CLI::App* m = app.add_subcommand("metrics", "score line-aligned files: BLEU, chrF, ROUGE, classification, regression (JSON)");
  m->require_subcommand(1);
  auto add = [&](const std::string& kind, const std::string& help, bool text) {
    auto req = std::make_shared<eval::MetricsRequest>();
    req->kind = kind;
    CLI::App* c = m->add_subcommand(kind, help);
    if (text) {
      c->add_option("--hyp", req->hyp, "hypotheses, one per line")->required();
      c->add_option("--ref", req->refs, "references, one per line; repeat for several reference streams")->required();
    } else {
      c->add_option("--pred", req->pred, "predictions, one per line")->required();
      c->add_option("--gold", req->gold, "gold labels or values, one per line")->required();
    }
    if (kind == "rouge") {
      c->add_flag("--stem", req->stem, "apply the Porter stemmer (rouge-score's use_stemmer=True)");
      c->add_option("--types", req->rouge_types, "rouge1..rouge9, rougeL, rougeLsum (sentences split at a literal \\n)")
          ->delimiter(',')
          ->capture_default_str();
    }
    if (kind == "classification")
      c->add_option("--labels", req->labels, "the allowed labels, comma-separated; others are refused")->delimiter(',');
    c->callback([&ctx, req]() {
      ctx.action = [req]() {
        std::cout << eval::run_metrics(*req) << "\n";
        return 0;
      };
    });
  };
  add("bleu", "corpus BLEU as sacreBLEU computes it (13a, exp smoothing), with its signature", true);
  add("chrf", "corpus chrF (sacreBLEU defaults: character 6-grams, beta 2)", true);
  add("rouge", "ROUGE-1/2/L/Lsum as Google's rouge-score computes them (mean over examples)", true);
  add("classification", "accuracy, precision/recall/F1 (micro, macro, weighted), confusion matrix", false);
  add("regression", "MSE, MAE, RMSE, R^2", false);
}

}  // namespace dsforge::cli
