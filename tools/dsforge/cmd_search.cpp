// dsforge search --config run.toml --space space.toml --trials N [--workers K] [--study study.db] [--out DIR]
// dsforge search report --study study.db
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/pipeline/search_stage.h"

namespace dsforge::cli {
namespace {

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw Error("search: cannot find this program's path (/proc/self/exe) to start the workers");
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

void add_search_command(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<pipeline::SearchOptions>();
  CLI::App* c = app.add_subcommand(
      "search", "hyperparameter search: trials of `dsforge train` with parameters from a TPE, GP or random sampler, "
                "pruned on their validation losses, or population-based training; stored in a resumable SQLite study");
  c->add_option("-c,--config", o->config, "base run config (TOML); --section.key=value overrides any key")
      ->check(CLI::ExistingFile);
  c->add_option("--space", o->space, "search space (TOML): run-config and model.* keys with ranges or choices")
      ->check(CLI::ExistingFile);
  c->add_option("--trials", o->n_trials, "trials in the study (all workers together)")->capture_default_str();
  c->add_option("--workers", o->workers, "worker processes on this machine sharing the study")->capture_default_str();
  c->add_option("--study", o->study, "SQLite study file, shareable between processes and machines (default <out>/study.db)");
  c->add_option("--out", o->out, "folder of the trials and outputs (default <run.out_dir>/search)");
  c->add_option("--sampler", o->sampler.name, "tpe, gp or random")->capture_default_str()->check(CLI::IsMember({"tpe", "gp", "random"}));
  c->add_flag("--multivariate,!--independent", o->sampler.multivariate,
              "tpe: draw the unconditional parameters jointly (default) or each on its own (--independent, Optuna's default)");
  c->add_flag("--scott-bandwidth", o->sampler.scott_bandwidth, "tpe, joint: kernel widths by Scott's rule (Optuna 3.1's multivariate)");
  c->add_option("--startup-trials", o->sampler.n_startup_trials, "random trials before the model-based sampler")
      ->capture_default_str();
  c->add_option("--pruner", o->pruner.name, "none, median, asha or hyperband")->capture_default_str()
      ->check(CLI::IsMember({"none", "median", "asha", "hyperband"}));
  c->add_option("--min-resource", o->pruner.min_resource, "asha/hyperband: steps of the first rung (0 = train.eval_every)");
  c->add_option("--reduction-factor", o->pruner.reduction_factor, "asha/hyperband: keep 1/rf at each rung (0 = 4 asha, 3 hyperband)");
  c->add_option("--strategy", o->strategy, "sample (a sampler proposes each trial, a pruner stops some) or pbt (population-based training)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sample", "pbt"}));
  c->add_option("--population", o->pbt.population, "pbt: members training side by side")->capture_default_str();
  c->add_option("--interval", o->pbt.interval, "pbt: steps per generation, between exploit/explore (0 = train.eval_every)")
      ->capture_default_str();
  c->add_option("--exploit-fraction", o->pbt.exploit_fraction, "pbt: the bottom share copies the top share")->capture_default_str();
  c->add_option("--perturb", o->pbt.perturb, "pbt: inherited numbers are multiplied by 1 - p or 1 + p")->capture_default_str();
  c->add_option("--resample-probability", o->pbt.resample_probability, "pbt: an inherited choice is redrawn with this probability")
      ->capture_default_str();
  c->add_option("--seed", o->seed, "sampler seed (default run.seed)");
  c->add_flag("--worker", o->worker, "internal: one worker of --workers K")->group("");
  o->pruner.min_resource = 0;

  auto report_study = std::make_shared<std::string>();
  CLI::App* report = c->add_subcommand("report", "a study's optimisation history and parameter importance");
  report->add_option("--study", *report_study, "SQLite study file")->required()->check(CLI::ExistingFile);
  report->callback([&ctx, report_study]() {
    ctx.action = [report_study]() {
      std::printf("%s", pipeline::search_report(*report_study).c_str());
      return 0;
    };
  });

  c->callback([&ctx, o, report]() {
    if (report->parsed()) return;
    if (o->config.empty() || o->space.empty()) throw CLI::RequiredError("--config and --space");
    o->overrides = ctx.overrides;
    if (o->workers > 1 && !o->worker) {
      o->worker_argv = {self_exe(), "search", "--config", o->config, "--space", o->space, "--trials",
                        std::to_string(o->n_trials), "--workers", std::to_string(o->workers), "--sampler", o->sampler.name,
                        "--startup-trials", std::to_string(o->sampler.n_startup_trials), "--pruner", o->pruner.name,
                        "--min-resource", std::to_string(o->pruner.min_resource), "--reduction-factor",
                        std::to_string(o->pruner.reduction_factor), "--worker"};
      if (!o->study.empty()) o->worker_argv.insert(o->worker_argv.end(), {"--study", o->study});
      if (!o->out.empty()) o->worker_argv.insert(o->worker_argv.end(), {"--out", o->out});
      if (o->seed >= 0) o->worker_argv.insert(o->worker_argv.end(), {"--seed", std::to_string(o->seed)});
      if (!o->sampler.multivariate) o->worker_argv.push_back("--independent");
      if (o->sampler.scott_bandwidth) o->worker_argv.push_back("--scott-bandwidth");
      for (const auto& ov : ctx.overrides) o->worker_argv.push_back("--" + ov);
    }
    ctx.action = [o]() { return pipeline::stage_search(*o); };
  });
}

}  // namespace dsforge::cli
