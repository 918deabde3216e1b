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

// The population-based training section of the report, each trial's first step, and pbt.json (nothing
// for a sampler's study).
struct PbtOutputs {
  std::string html;
  std::map<int64_t, int64_t> start_steps;
};
PbtOutputs write_pbt_outputs(search::Study& study, const std::vector<search::TrialRecord>& trials, const std::string& out) {
  const auto lineage = study.lineage();
  if (lineage.empty()) return {};
  const int64_t interval = nlohmann::json::parse(study.setting("strategy", "{}")).value("interval", int64_t{0});
  const nlohmann::json j = search::pbt_json(study.space(), trials, lineage, interval);
  if (!out.empty()) write_file_atomic(path_join(out, "pbt.json"), j.dump(2) + "\n");
  const int64_t best = j.value("best_member", int64_t{-1});
  if (best >= 0 && !out.empty()) {
    const int64_t last = j["members"][static_cast<size_t>(best)]["schedule"].back()["trial"].get<int64_t>();
    log_info("search: best member ", best, " (validation loss ", j["best_value"].get<double>(), "), ", j["training_steps"].get<int64_t>(),
             " training steps in all; its model: ", path_join(trial_dir(out, last), "model"));
  }
  return {search::pbt_report_html(study.space(), trials, lineage, interval), search::pbt_start_steps(lineage, interval)};
}

void write_outputs(search::Study& study, const RunConfig& base, const std::string& out) {
  const auto trials = study.trials();
  const auto& space = study.space();
  write_file_atomic(path_join(out, "trials.json"), search::trials_json(space, trials).dump(2) + "\n");
  const PbtOutputs pbt_out = write_pbt_outputs(study, trials, out);
  const std::string& pbt = pbt_out.html;
  // (a population's best is a schedule, not one config: pbt.json records it instead of best.toml)
  if (const auto* best = search::best_trial(trials); best && pbt.empty()) {
    const std::string dir = path_join(out, "best");
    RunConfig cfg = trial_config(space, base, best->params, dir, path_join(out, "best_model.json"));
    write_file_atomic(path_join(out, "best.toml"),
                      fmt("# The best trial (", best->number, ", validation loss ", best->value, ") of the search in ", out,
                          "\n# train it: dsforge train --config ", path_join(out, "best.toml"), "\n", to_toml(cfg)));
  }
  write_file_atomic(path_join(out, "report.html"),
                    search::search_report_html(space, trials, "dsforge search: " + out, pbt, pbt_out.start_steps));
  std::printf("%s", search::search_report_text(space, trials).c_str());
  std::fflush(stdout);
  log_info("search: ", path_join(out, "trials.json"), search::best_trial(trials) && pbt.empty() ? ", " + path_join(out, "best.toml") : "",
           pbt.empty() ? "" : ", " + path_join(out, "pbt.json"), ", ", path_join(out, "report.html"));
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

// The newest complete checkpoint folder of a run folder and its step; "" when there is none.
std::pair<std::string, int64_t> newest_checkpoint(const std::string& run_dir) {
  std::pair<std::string, int64_t> best{"", -1};
  std::error_code ec;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root, ec)) return best;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("step_", 0) != 0 || name.find(".tmp") != std::string::npos || !fs::exists(e.path() / "DONE")) continue;
    const int64_t step = std::strtoll(name.c_str() + 5, nullptr, 10);
    if (step > best.second) best = {e.path().string(), step};
  }
  return best;
}

// Keys a training may change between two of its segments: not the model, the data, the tokenizer or
// what the data stream and the checkpoint identity depend on.
bool changes_mid_training(const std::string& key) {
  for (const char* prefix : {"model.", "data.", "tokenizer.", "augment.", "run."})
    if (key.rfind(prefix, 0) == 0) return false;
  return key != "train.seq_len" && key != "train.batch_size" && key != "train.micro_batch_size" && key != "train.max_steps" &&
         key != "train.eval_every" && key != "train.checkpoint_every";
}

int run_pbt(const SearchOptions& o, const RunConfig& base, const search::SearchSpace& space, search::Study& study, const std::string& out,
            uint64_t seed) {
  search::PbtOptions po = o.pbt;
  po.seed = seed;
  if (po.interval <= 0) po.interval = base.train.eval_every;
  search::validate(po);
  for (const auto& p : space.params)
    if (!changes_mid_training(p.name))
      throw ConfigError(fmt("search --strategy pbt: ", space.source, ": '", p.name,
                            "' cannot change in the middle of a training (PBT searches train.lr, train.weight_decay, ...)"));
  const int64_t P = po.population, interval = po.interval;
  const int64_t generations = (base.train.max_steps + interval - 1) / interval;
  const std::string settings = nlohmann::json{{"strategy", "pbt"},       {"population", P},
                                              {"interval", interval},     {"max_steps", base.train.max_steps},
                                              {"exploit_fraction", po.exploit_fraction}, {"perturb", po.perturb},
                                              {"resample_probability", po.resample_probability}, {"seed", seed}}
                                   .dump();
  const std::string stored = study.setting("strategy", settings);
  if (stored != settings)
    throw ConfigError(fmt(study.path(), ": this study was made with other search settings (", stored, "); this run asks for ", settings,
                          ". Pass the same options, or another --study"));
  log_info("search: population-based training, ", P, " members x ", generations, " generations of ", interval, " steps (",
           P * base.train.max_steps, " steps in all); the bottom ", po.exploit_fraction * 100, "% copy the top ", po.exploit_fraction * 100,
           "% and perturb by x", 1 - po.perturb, " or x", 1 + po.perturb);
  for (int64_t g = 0; g < generations; ++g) {
    std::vector<search::TrialRecord> trials = study.trials();
    std::vector<search::PbtSegment> segs;
    if (g == 0) {
      segs = search::pbt_first_generation(space, po);
    } else {
      std::vector<search::TrialRecord> previous;
      for (int64_t m = 0; m < P; ++m) {
        const auto n = static_cast<size_t>((g - 1) * P + m);
        if (n >= trials.size() || trials[n].number != static_cast<int64_t>(n))
          throw Error(fmt(study.path(), ": trial ", n, " of generation ", g - 1, " is missing (a study of another search?)"));
        previous.push_back(trials[n]);
      }
      segs = search::pbt_next_generation(space, previous, g, po);
    }
    const int64_t end_step = std::min(base.train.max_steps, (g + 1) * interval);
    for (int64_t m = 0; m < P; ++m) {
      const int64_t n = g * P + m;
      if (static_cast<size_t>(n) < trials.size()) {
        const search::TrialState st = trials[static_cast<size_t>(n)].state;
        if (st == search::TrialState::kComplete || st == search::TrialState::kFail || st == search::TrialState::kPruned) continue;
      }
      const search::PbtSegment& seg = segs[static_cast<size_t>(m)];
      auto t = study.claim(n + 1, [&](const std::vector<search::TrialRecord>&, int64_t) { return seg.params; });
      if (!t || t->number != n) throw Error(fmt(study.path(), ": expected to run trial ", n, " next (a study of another search?)"));
      study.record_lineage({n, m, g, seg.source, seg.exploited});
      const std::string dir = trial_dir(out, n);
      double last = NAN;
      bool ours = false;
      try {
        RunConfig cfg = trial_config(space, base, t->params, dir, path_join(dir, "model_config.json"));
        cfg.train.checkpoint_every = interval;
        cfg.train.keep_checkpoints = 1;
        if (interval % cfg.train.eval_every != 0) cfg.train.eval_every = interval;
        if (seg.source >= 0 && newest_checkpoint(dir).second < g * interval) {
          // Exploit (or continue): the segment starts from the source's checkpoint at the generation's start.
          const auto [from, step] = newest_checkpoint(trial_dir(out, seg.source));
          if (step != g * interval)
            throw CheckpointError(fmt(trial_dir(out, seg.source), ": no checkpoint at step ", g * interval, " to continue from (",
                                      step < 0 ? "none" : fmt("newest at step ", step), ")"));
          fs::remove_all(path_join(dir, "checkpoints"));
          make_dirs(path_join(dir, "checkpoints"));
          fs::copy(from, fs::path(dir) / "checkpoints" / fs::path(from).filename(), fs::copy_options::recursive);
        }
        std::string overrides;
        for (const auto& p : space.params)
          if (auto it = t->params.find(p.name); it != t->params.end()) overrides += " " + p.override_text(it->second);
        log_info("search: member ", m, " generation ", g, " (trial ", n, ", steps ", g * interval, "-", end_step, ")",
                 seg.source < 0 ? "" : seg.exploited ? fmt(", exploits trial ", seg.source) : fmt(", continues trial ", seg.source), ":",
                 overrides);
        TrainObserver observer;
        observer.on_validation = [&](int64_t step, double loss) {
          study.report(n, step, loss);
          last = loss;
          ours = step >= end_step && end_step < base.train.max_steps;
          return ours;
        };
        const int code = stage_train(cfg, observer);
        if (code == kInterrupted && !ours) {
          study.finish(n, search::TrialState::kWaiting, NAN);
          return kInterrupted;
        }
        if (!std::isfinite(last)) throw Error(fmt("trial ", n, ": training reported no validation loss"));
        study.finish(n, search::TrialState::kComplete, last);
        log_info("search: trial ", n, " COMPLETE, value ", last);
      } catch (const Interrupted&) {
        study.finish(n, search::TrialState::kWaiting, NAN);
        throw;
      } catch (const std::exception& e) {
        study.finish(n, search::TrialState::kFail, last, e.what());
        log_info("warning: ", "search: trial ", n, " FAIL: ", e.what());
      }
    }
    // Generation g - 1's checkpoints were the sources of generation g: no segment needs them any more.
    for (int64_t m = 0; g >= 1 && m < P; ++m) {
      std::error_code ec;
      fs::remove_all(fs::path(trial_dir(out, (g - 1) * P + m)) / "checkpoints", ec);
    }
  }
  return kOk;
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
    if (o.strategy != "pbt")
      log_info("search: ", o.n_trials, " trials of ", o.space, " (", space.params.size(), " parameters), sampler ",
             o.sampler.name,
             o.sampler.name != "tpe"          ? ""
             : !o.sampler.multivariate        ? " (independent)"
             : o.sampler.scott_bandwidth      ? " (joint, Scott's rule)"
                                              : " (joint)",
             ", pruner ", po.name, ", study ", study_path);
    check_inputs(base);
    stage_prepare(base);
    if (base.augment.enabled) stage_augment(base);
    stage_tokenizer(base);
    stage_tokenize(base);
    search::Study::open(study_path, space);  // creates it, or checks its space, before any worker starts
  }
  int rc = kOk;
  if (o.strategy != "sample" && o.strategy != "pbt")
    throw ConfigError(fmt("search: --strategy '", o.strategy, "': expected sample or pbt"));
  if (o.strategy == "pbt") {
    if (o.workers > 1) throw ConfigError("search --strategy pbt: runs its members in one process (--workers 1)");
    configure_threads(base);
    auto study = search::Study::open(study_path, space);
    rc = run_pbt(o, base, space, *study, out, static_cast<uint64_t>(o.seed >= 0 ? o.seed : base.run.seed));
  } else if (o.workers > 1 && !o.worker) {
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
  const auto trials = study->trials();
  const PbtOutputs pbt = write_pbt_outputs(*study, trials, "");
  write_file_atomic(html, search::search_report_html(study->space(), trials, "dsforge search: " + study_path, pbt.html, pbt.start_steps));
  return search::search_report_text(study->space(), trials) + "\nHTML report: " + html + "\n";
}

}  // namespace dsforge::pipeline
