// dsforge metrics bleu|chrf|ter|paired-bs|rouge|classification|regression
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/eval/metrics_files.h"

namespace dsforge::cli {

void add_metrics_commands(CLI::App& app, Context& ctx) {
  CLI::App* m = app.add_subcommand("metrics", "score line-aligned files: BLEU, chrF(++), TER, paired bootstrap, ROUGE, classification, regression (JSON)");
  m->require_subcommand(1);
  auto add = [&](const std::string& kind, const std::string& help, bool text) {
    auto req = std::make_shared<eval::MetricsRequest>();
    req->kind = kind;
    CLI::App* c = m->add_subcommand(kind, help);
    if (kind == "paired-bs") {
      c->add_option("--baseline", req->baseline, "the baseline system's output, one segment per line")->required();
      c->add_option("--hyp", req->systems, "a system to compare with the baseline; repeat for several")->required();
      c->add_option("--ref", req->refs, "references, one per line; repeat for several reference streams")->required();
    } else if (text) {
      c->add_option("--hyp", req->hyp, "hypotheses, one per line")->required();
      c->add_option("--ref", req->refs, "references, one per line; repeat for several reference streams")->required();
    } else {
      c->add_option("--pred", req->pred, "predictions, one per line")->required();
      c->add_option("--gold", req->gold, "gold labels or values, one per line")->required();
    }
    if (kind == "bleu" || kind == "paired-bs") {
      c->add_option("--tokenize,--tok", req->tokenize, "BLEU tokenizer: 13a, intl, zh, char, none")->capture_default_str();
    }
    if (kind == "bleu" || kind == "chrf" || kind == "paired-bs")
      c->add_flag("--lowercase,--lc", req->lowercase, "case-insensitive BLEU / chrF");
    if (kind == "chrf" || kind == "paired-bs") {
      c->add_option("--char-order", req->char_order, "chrF character n-gram order")->capture_default_str();
      c->add_option("--word-order", req->word_order, "chrF word n-gram order (2 = chrF++)")->capture_default_str();
      c->add_option("--beta", req->beta, "chrF recall weight")->capture_default_str();
    }
    if (kind == "ter" || kind == "paired-bs") c->add_flag("--case-sensitive", req->case_sensitive, "TER: keep case (sacreBLEU lowercases by default)");
    if (kind == "bleu" || kind == "chrf" || kind == "ter") c->add_flag("--sentence", req->sentence, "also list the score of every line");
    if (kind == "paired-bs") {
      c->add_option("--metrics", req->metrics, "bleu, chrf, ter")->delimiter(',')->capture_default_str();
      c->add_option("--paired-bs-n", req->n_bootstrap, "bootstrap resamples")->capture_default_str();
      c->add_option("--seed", req->seed, "resampling seed (sacreBLEU's SACREBLEU_SEED default)")->capture_default_str();
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
  add("bleu", "corpus BLEU as sacreBLEU computes it (13a/intl/zh/char/none, exp smoothing), with its signature", true);
  add("chrf", "corpus chrF (sacreBLEU defaults: character 6-grams, beta 2; --word-order 2 for chrF++)", true);
  add("ter", "corpus TER as sacreBLEU computes it (tercom shifts, case-insensitive)", true);
  add("paired-bs", "paired bootstrap resampling of systems against a baseline (sacreBLEU --paired-bs)", true);
  add("rouge", "ROUGE-1/2/L/Lsum as Google's rouge-score computes them (mean over examples)", true);
  add("classification", "accuracy, precision/recall/F1 (micro, macro, weighted), confusion matrix", false);
  add("regression", "MSE, MAE, RMSE, R^2", false);
}

}  // namespace dsforge::cli
