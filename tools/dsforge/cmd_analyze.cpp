// dsforge analyze RUN_DIR | --finetune DIR [--mine-hard OUT.tsv]
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/eval/analysis.h"

namespace dsforge::cli {

void add_analyze_command(CLI::App& app, Context& ctx) {
  struct Args {
    std::string run_dir, finetune_dir, mine_out;
    int64_t top = 10, factor = 4;
    double fraction = 0.1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand(
      "analyze", "error analysis: fit diagnosis and hardest tokens/documents of a run, or hardest examples, confused "
                 "pairs and hard-example mining of a fine-tuned classifier");
  c->add_option("run_dir", a->run_dir, "training run folder (metrics.jsonl, model/, shards/)")->check(CLI::ExistingDirectory);
  c->add_option("--finetune", a->finetune_dir, "a `dsforge finetune --out` folder (predictions.tsv)")
      ->check(CLI::ExistingDirectory);
  c->add_option("--top", a->top, "items per list")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--mine-hard", a->mine_out, "write a re-weighted training file (text<TAB>label) that repeats the hardest examples");
  c->add_option("--fraction", a->fraction, "share of training examples counted as hard")->capture_default_str();
  c->add_option("--factor", a->factor, "times each hard example appears in the re-weighted file")->capture_default_str();
  c->callback([&ctx, a]() {
    if (a->run_dir.empty() == a->finetune_dir.empty())
      throw CLI::ValidationError("analyze", "give a run folder or --finetune DIR (one of the two)");
    if (!a->mine_out.empty() && a->finetune_dir.empty())
      throw CLI::ValidationError("--mine-hard", "works on a fine-tuned classifier: add --finetune DIR");
    ctx.action = [a]() {
      std::cout << (a->finetune_dir.empty() ? eval::analyze_run(a->run_dir, a->top)
                                            : eval::analyze_finetune(a->finetune_dir, a->top, a->mine_out, a->fraction, a->factor));
      return 0;
    };
  });
}

}  // namespace dsforge::cli
