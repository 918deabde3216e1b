// dsforge prune
#include <cstdio>
#include <memory>

#include "commands.h"
#include "dsforge/compress/prune.h"
#include "dsforge/core/error.h"
#include "dsforge/pipeline/prune_curve.h"

namespace dsforge::cli {

void add_prune_command(CLI::App& app, Context& ctx) {
  struct PruneArgs {
    std::string model, out;
    compress::PruneOptions o;
    bool curve = false;
    std::vector<std::string> methods{"experts", "heads", "neurons", "magnitude"};
    std::vector<double> amounts{0.25, 0.5};
    std::string text;
  };
  auto a = std::make_shared<PruneArgs>();
  CLI::App* p = app.add_subcommand("prune", "remove weights, routed experts, attention heads or FFN neurons; optional recovery fine-tuning");
  p->add_option("--model", a->model, "model folder")->required()->check(CLI::ExistingDirectory);
  p->add_option("--out", a->out, "output model folder (must not exist or be empty)")->required();
  p->add_option("--method", a->o.method, "magnitude | experts | heads | neurons");
  CLI::Option* amount = p->add_option("--amount", a->o.amount, "fraction to remove, in [0, 1)");
  p->add_flag("--curve", a->curve,
              "prune every --methods at every --amounts into --out, score each on --text before (and with --recover-steps "
              "after) recovery: curve.json, curve.md, curve.html");
  p->add_option("--methods", a->methods, "--curve: methods")->delimiter(',')->capture_default_str();
  p->add_option("--amounts", a->amounts, "--curve: fractions removed")->delimiter(',')->capture_default_str();
  p->add_option("--text", a->text, "--curve: held-out text scored like `dsforge eval --text`");
  p->add_option("--scope", a->o.scope, "magnitude: global (one threshold) or layer (each matrix the same fraction)")->capture_default_str();
  p->add_option("--schedule", a->o.schedule, "magnitude: oneshot, or cubic (gradual during recovery, Zhu & Gupta 2017)")->capture_default_str();
  p->add_option("--prune-every", a->o.prune_every, "cubic: steps between mask updates")->capture_default_str();
  p->add_option("--prune-end", a->o.prune_end, "cubic: share of the recovery steps after which the sparsity is final")->capture_default_str();
  p->add_option("--calib", a->o.calib_path, "experts: calibration text (UTF-8) the router statistics come from");
  p->add_option("--calib-tokens", a->o.calib_tokens, "experts: at most this many calibration tokens")->capture_default_str();
  p->add_option("--calib-seq-len", a->o.calib_seq_len, "experts: calibration row length (0 = the model's training seq_len)")->capture_default_str();
  p->add_option("--recover-steps", a->o.recover_steps, "recovery fine-tuning steps through the trainer (0 = none)")->capture_default_str();
  p->add_option("--config", a->o.run_config, "run config for recovery: its run folder's token shards and train.* settings")->check(CLI::ExistingFile);
  p->add_option("--recovery-dir", a->o.recovery_dir, "recovery checkpoints and metrics (default <out>.recovery)");
  p->footer("Recovery takes run-config overrides: --train.lr=1e-3 --train.batch_size=8 ...");
  p->callback([&ctx, a, amount]() {
    const bool amount_given = amount->count() > 0;
    ctx.action = [&ctx, a, amount_given]() {
      a->o.overrides = ctx.overrides;
      if (a->curve) {
        pipeline::PruneCurveOptions c{a->model, a->out, a->text, a->methods, a->amounts, a->o};
        std::fputs(pipeline::prune_curve(c).c_str(), stdout);
        return 0;
      }
      if (a->o.method.empty() || !amount_given) throw ConfigError("prune: --method and --amount are required (or --curve)");
      const auto r = compress::prune_model(a->model, a->out, a->o);
      std::printf("wrote %s: %s %.3f, parameters %lld -> %lld (%.1f%%)", a->out.c_str(), r.method.c_str(), r.amount,
                  static_cast<long long>(r.params_before), static_cast<long long>(r.params_after),
                  100.0 * static_cast<double>(r.params_after) / static_cast<double>(r.params_before));
      if (r.prunable > 0)
        std::printf(", %lld of %lld prunable weights zero (%.1f%%)", static_cast<long long>(r.zeros), static_cast<long long>(r.prunable),
                    100.0 * static_cast<double>(r.zeros) / static_cast<double>(r.prunable));
      if (r.recover_steps > 0) std::printf(", %lld recovery steps (final train loss %.4f)", static_cast<long long>(r.recover_steps), r.recover_final_loss);
      std::printf("\n");
      return 0;
    };
  });
}

}  // namespace dsforge::cli
