#include "dsforge/pipeline/search_stage.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/pipeline/run_folder.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/search/report.h"

extern char** environ;

namespace dsforge::pipeline {
namespace {

namespace fs = std::filesystem;

std::string trial_dir(const std::string& out, int64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "trial_%04lld", static_cast<long long>(number));
  return path_join(out, buf);
}

// A trial's run folder reads the base run folder's data, tokenizer and shards through links.
void link_shared_inputs(const RunConfig& base, const std::string& dir) {
  make_dirs(dir);
  for (const char* name : {"data", "tokenizer.json", "shards"}) {
    const fs::path target = fs::absolute(path_join(base.run.out_dir, name)), link = path_join(dir, name);
    std::error_code ec;
    if (fs::is_symlink(link, ec)) {
      if (fs::read_symlink(link, ec) == target) continue;
      fs::remove(link, ec);
    }
    fs::create_symlink(target, link, ec);
    if (ec) throw IoError(fmt(link.string(), ": cannot link to ", target.string(), " (", ec.message(), ")"));
  }
}

// The run config of a trial (or of the best one) in `dir`.
RunConfig trial_config(const search::SearchSpace& space, const RunConfig& base, const search::Params& params,
                       const std::string& dir, const std::string& model_json_path) {
  nlohmann::json model_fields = nlohmann::json::object();
  RunConfig cfg = search::apply_params(space, base, params, &model_fields);
  cfg.run.out_dir = dir;
  link_shared_inputs(base, dir);
  if (!model_fields.empty()) {
    write_file_atomic(model_json_path, search::model_config_with(base, model_fields));
    cfg.model.config = model_json_path;
  }
  validate(cfg);
  return cfg;
}

void write_outputs(search::Study& study, const RunConfig& base, const std::string& out) {
  const auto trials = study.trials();
  const auto& space = study.space();
  write_file_atomic(path_join(out, "trials.json"), search::trials_json(space, trials).dump(2) + "\n");
  if (const auto* best = search::best_trial(trials)) {
    const std::string dir = path_join(out, "best");
    RunConfig cfg = trial_config(space, base, best->params, dir, path_join(out, "best_model.json"));
    write_file_atomic(path_join(out, "best.toml"),
                      fmt("# The best trial (", best->number, ", validation loss ", best->value, ") of the search in ", out,
                          "\n# train it: dsforge train --config ", path_join(out, "best.toml"), "\n", to_toml(cfg)));
  }
  write_file_atomic(path_join(out, "report.html"), search::search_report_html(space, trials, "dsforge search: " + out));
  std::printf("%s", search::search_report_text(space, trials).c_str());
  std::fflush(stdout);
  log_info("search: ", path_join(out, "trials.json"), search::best_trial(trials) ? ", " + path_join(out, "best.toml") : "",
           ", ", path_join(out, "report.html"));
}

int run_workers(const SearchOptions& o, const std::string& out) {
  std::vector<pid_t> pids;
  for (int64_t k = 0; k < o.workers; ++k) {
    std::vector<std::string> args = o.worker_argv;
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = path_join(out, fmt("worker_", k, ".log"));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw Error(fmt("search: cannot start worker ", k, " (", argv[0], "): ", std::strerror(rc)));
    log_info("search: worker ", k, " (pid ", pid, ") logs to ", log);
    pids.push_back(pid);
  }
  int worst = kOk;
  for (size_t k = 0; k < pids.size(); ++k) {
    int status = 0;
    while (::waitpid(pids[k], &status, 0) < 0 && errno == EINTR) {
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != kOk) log_info("warning: ", "search: worker ", k, " exited with ", code, " (see worker_", k, ".log)");
    if (code != kOk && worst == kOk) worst = code;
  }
  return worst;
}

}  // namespace

int stage_search(const SearchOptions& o) {
  if (o.n_trials < 1) throw ConfigError(fmt("search: --trials must be at least 1, got ", o.n_trials));
  if (o.workers < 1) throw ConfigError(fmt("search: --workers must be at least 1, got ", o.workers));
  RunConfig base = load_run_config(o.config, o.overrides);
  const search::SearchSpace space = search::load_search_space(o.space, base);
  const std::string out = o.out.empty() ? path_join(base.run.out_dir, "search") : o.out;
  const std::string study_path = o.study.empty() ? path_join(out, "study.db") : o.study;
  make_dirs(out);
  search::PrunerOptions po = o.pruner;
  if (po.min_resource <= 0) po.min_resource = base.train.eval_every;
  if (po.max_resource <= 0) po.max_resource = base.train.max_steps;
  if (po.name != "none" && base.train.eval_every >= base.train.max_steps)
    log_info("warning: ", "search: train.eval_every (", base.train.eval_every, ") >= train.max_steps (", base.train.max_steps,
             "): the pruner only sees the final loss; lower train.eval_every");
  if (o.workers > 1 && base.run.threads == 0)
    base.run.threads = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / o.workers);

  if (!o.worker) {
    configure_threads(base);
    log_info("search: ", o.n_trials, " trials of ", o.space, " (", space.params.size(), " parameters), sampler ",
             o.sampler.name, o.sampler.multivariate ? " (multivariate)" : "", ", pruner ", po.name, ", study ", study_path);
    check_inputs(base);
    stage_prepare(base);
    if (base.augment.enabled) stage_augment(base);
    stage_tokenizer(base);
    stage_tokenize(base);
    search::Study::open(study_path, space);  // creates it, or checks its space, before any worker starts
  }
  int rc = kOk;
  if (o.workers > 1 && !o.worker) {
    if (o.worker_argv.empty()) throw Error("search: --workers > 1 needs the worker command line");
    rc = run_workers(o, out);
  } else {
    configure_threads(base);
    auto study = search::Study::open(study_path, space);
    search::OptimizeOptions oo;
    oo.n_trials = o.n_trials;
    oo.seed = static_cast<uint64_t>(o.seed >= 0 ? o.seed : base.run.seed);
    oo.sampler = o.sampler;
    oo.pruner = po;
    oo.on_finish = [&](const search::TrialRecord& t) {
      log_info("search: trial ", t.number, " ", search::state_name(t.state),
               std::isfinite(t.value) ? fmt(", value ", t.value) : std::string(), t.error.empty() ? "" : ": " + t.error);
    };
    auto objective = [&](const search::TrialRecord& t, const search::Reporter& report) -> search::ObjectiveResult {
      const std::string dir = trial_dir(out, t.number);
      RunConfig cfg = trial_config(space, base, t.params, dir, path_join(dir, "model_config.json"));
      std::string overrides;
      for (const auto& p : space.params)
        if (auto it = t.params.find(p.name); it != t.params.end()) overrides += " " + p.override_text(it->second);
      log_info("search: trial ", t.number, overrides, " -> ", dir);
      double last = t.intermediate.empty() ? NAN : t.intermediate.rbegin()->second;
      bool pruned = false;
      TrainObserver observer;
      observer.on_validation = [&](int64_t step, double loss) {
        last = loss;
        pruned = report(step, loss) || pruned;
        return pruned;
      };
      const int code = stage_train(cfg, observer);
      if (code == kInterrupted && !pruned) return {last, false, true};
      if (!std::isfinite(last)) throw Error(fmt("trial ", t.number, ": training reported no validation loss"));
      return {last, pruned, false};
    };
    const auto summary = search::optimize(*study, objective, oo);
    if (summary.interrupted) rc = kInterrupted;
  }
  if (!o.worker) {
    auto study = search::Study::open(study_path, space);
    write_outputs(*study, base, out);
  }
  return rc;
}

std::string search_report(const std::string& study_path) {
  if (!file_exists(study_path)) throw IoError(fmt(study_path, ": no such study database"));
  auto study = search::Study::open_existing(study_path);
  // The HTML report beside the database.
  const std::string parent = std::filesystem::path(study_path).parent_path().string();
  const std::string html = path_join(parent.empty() ? "." : parent, "report.html");
  write_file_atomic(html, search::search_report_html(study->space(), study->trials(), "dsforge search: " + study_path));
  return search::search_report_text(study->space(), study->trials()) + "\nHTML report: " + html + "\n";
}

}  // namespace dsforge::pipeline
