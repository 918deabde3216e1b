#include "dsforge/pipeline/run_folder.h"

#include <set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/ingest.h"
#include "dsforge/dist/env.h"
#include "dsforge/model/config.h"

namespace dsforge::pipeline {
namespace {

std::string saved_path(const RunConfig& cfg) { return path_join(cfg.run.out_dir, "config.toml"); }

std::string key_of(const std::string& diff) { return diff.substr(0, diff.find(' ')); }

bool is_generate_key(const std::string& key) { return key.rfind("generate.", 0) == 0; }

}  // namespace

bool is_runtime_key(const std::string& key) {
  // How the work is spread (threads, device, ZeRO sharding, gradient buckets) changes its speed, not its result.
  static const std::set<std::string> keys = {"run.threads",   "run.device",     "dist.timeout_s",
                                             "dist.bucket_mb", "dist.zero1",    "train.peak_gflops"};
  return keys.count(key) > 0;
}

bool is_continuation_key(const std::string& key) {
  static const std::set<std::string> keys = {
      "train.max_steps",        "train.log_every",       "train.eval_every",         "train.checkpoint_every",
      "train.keep_checkpoints", "train.early_stopping_patience", "train.early_stopping_min_delta",
      "train.spike_factor",     "train.max_rollbacks",   "train.fit_micro_batch",    "train.memory_gb",
      "eval.batches"};
  return keys.count(key) > 0;
}

void claim_run_folder(const RunConfig& cfg, const std::string& stage, bool allow_generate_changes) {
  const std::string path = saved_path(cfg);
  if (!file_exists(path)) {
    // Several ranks may start together: only the first writes the recipe.
    if (dist::dist_env_from_environment().rank != 0) return;
    make_dirs(cfg.run.out_dir);
    write_file_atomic(path, to_toml(cfg));
    return;
  }
  RunConfig saved;
  try {
    saved = load_saved_run_config(path);
  } catch (const ConfigError& e) {
    throw ConfigError(fmt(stage, ": ", cfg.run.out_dir, " holds a config.toml this version cannot read (", e.what(),
                          "); use another run.out_dir"));
  }
  std::vector<std::string> differ, continued;
  for (const auto& d : differing_keys(saved, cfg)) {
    const std::string key = key_of(d);
    if (key == "run.out_dir" || is_runtime_key(key) || (allow_generate_changes && is_generate_key(key))) continue;
    (is_continuation_key(key) ? continued : differ).push_back(d);
  }
  if (differ.empty()) {
    if (continued.empty() || dist::dist_env_from_environment().rank != 0) return;
    // Training longer, or logging and checkpointing at another cadence, continues the same recipe:
    // the folder's config.toml records the new values (generate.* and runtime keys stay as saved).
    RunConfig updated = saved;
    for (const auto& d : continued) {
      const std::string key = key_of(d);
      const std::string now = d.substr(d.find(" -> ") + 4, d.size() - d.find(" -> ") - 5);
      apply_override(updated, key + "=" + (now.size() >= 2 && now.front() == '"' ? now.substr(1, now.size() - 2) : now));
    }
    write_file_atomic(path, to_toml(updated));
    std::string list;
    for (const auto& d : continued) list += (list.empty() ? "" : ", ") + d;
    log_info(stage, ": ", path, " updated: ", list);
    return;
  }
  std::string list;
  for (size_t i = 0; i < differ.size() && i < 6; ++i) list += (i ? ", " : "") + differ[i];
  if (differ.size() > 6) list += fmt(" and ", differ.size() - 6, " more");
  const std::string given = cfg.source_path.empty() ? "the defaults (no --config given)" : cfg.source_path;
  throw ConfigError(fmt(stage, ": ", cfg.run.out_dir, " was made by another recipe; ", given, " differs in ", differ.size(),
                        " key", differ.size() == 1 ? "" : "s", ": ", list,
                        ". Nothing was changed. Use the folder's own recipe (--config ", path,
                        "), or start a new run with --run.out_dir=DIR"));
}

bool matches_saved_recipe(const RunConfig& cfg) {
  const std::string path = saved_path(cfg);
  if (!file_exists(path)) return false;
  for (const auto& d : differing_keys(load_saved_run_config(path), cfg))
    if (key_of(d) != "run.out_dir" && !is_runtime_key(key_of(d))) return false;
  return true;
}

void check_inputs(const RunConfig& cfg) {
  const std::string& mc = cfg.model.config;
  if (!is_model_preset_name(mc) && !file_exists(mc)) {
    const std::string hint = cfg.source_path.empty()
                                 ? std::string("")
                                 : fmt(" (relative paths in ", cfg.source_path, " resolve against its folder)");
    throw ConfigError(fmt("key 'model.config': ", mc, ": model config not found", hint));
  }
  model::validate(model::load_model_config(mc), mc);
  if (cfg.data.source == "files") {
    data::expand_inputs(cfg.data.paths);  // throws naming a spec that matches nothing
    if (!cfg.data.val_paths.empty()) data::expand_inputs(cfg.data.val_paths);
    if (!cfg.data.test_paths.empty()) data::expand_inputs(cfg.data.test_paths);
  } else if (!file_exists(path_join(cfg.data.wordnet_dir, "data.noun"))) {
    throw ConfigError(fmt("key 'data.wordnet_dir': ", cfg.data.wordnet_dir,
                          " has no WordNet data.noun (install Debian's wordnet-base, or set data.source = \"files\")"));
  }
}

void check_model_dir(const std::string& dir) {
  if (file_exists(path_join(dir, "config.json")) && file_exists(path_join(dir, "model.safetensors"))) return;
  if (file_exists(path_join(path_join(dir, "model"), "config.json")))
    throw ConfigError(fmt("--model ", dir, ": not a model folder (did you mean ", path_join(dir, "model"), "?)"));
  if (!file_exists(dir))
    throw ConfigError(fmt("--model ", dir, ": not found (a model folder is made by `dsforge train`: <run>/model)"));
  throw ConfigError(fmt("--model ", dir, ": not a model folder (expected config.json and model.safetensors, made by "
                        "`dsforge train` in <run>/model)"));
}

}  // namespace dsforge::pipeline
