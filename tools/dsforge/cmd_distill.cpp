// dsforge distill
#include <cstdio>
#include <memory>

#include "commands.h"
#include "dsforge/compress/distill.h"

namespace dsforge::cli {

void add_distill_command(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<compress::DistillOptions>();
  CLI::App* d = app.add_subcommand("distill", "train a student language model against a frozen teacher (KL at temperature T + hard labels)");
  d->add_option("--teacher", o->teacher_dir, "teacher model folder")->required()->check(CLI::ExistingDirectory);
  d->add_option("--student", o->student, "student: a preset (nano, micro, ...), a config.json, or a model folder to start from")->required();
  d->add_option("--config", o->run_config, "run config: its run folder's token shards (the teacher's tokenizer) and train.* settings")
      ->required()
      ->check(CLI::ExistingFile);
  d->add_option("--out", o->out_dir, "distillation run folder: checkpoints/, metrics.jsonl, tb/, model/")->required();
  d->add_option("--temperature", o->temperature, "softmax temperature T of the KL term (scaled by T^2)")->capture_default_str();
  d->add_option("--alpha", o->alpha, "weight of the KL term; 1 - alpha weighs the hard-label loss (0 = train from scratch)")->capture_default_str();
  d->add_option("--hidden-weight", o->hidden_weight, "weight of the hidden-state MSE through a learned projection (0 = off)")->capture_default_str();
  d->footer("Training settings come from the run config and its overrides: --train.max_steps=300 --train.lr=2e-3 ...");
  d->callback([&ctx, o]() {
    ctx.action = [&ctx, o]() {
      o->overrides = ctx.overrides;
      const auto r = compress::distill(*o);
      if (r.interrupted) {
        std::printf("distill: interrupted at step %lld; run the same command again to resume\n", static_cast<long long>(r.steps));
        return 130;
      }
      std::printf("wrote %s: student of %lld parameters (teacher %lld), %lld steps, final train loss %.4f\n", r.model_dir.c_str(),
                  static_cast<long long>(r.student_params), static_cast<long long>(r.teacher_params), static_cast<long long>(r.steps),
                  r.final_loss);
      return 0;
    };
  });
}

}  // namespace dsforge::cli
