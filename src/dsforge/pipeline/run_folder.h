// The rules that keep a run folder consistent: one recipe per folder, and every input checked before
// the first slow stage runs.
//
//   claim_run_folder(cfg, "train");   // refuses when <run>/config.toml was written by another recipe
//   check_inputs(cfg);                // model config, data files: fails now, not after tokenization
//
// Free of libtorch, like stages.h.
#pragma once
#include <string>
#include <vector>

#include "dsforge/core/run_config.h"

namespace dsforge::pipeline {

// Keys that change how a command runs, never what it writes; they may differ from the saved recipe.
bool is_runtime_key(const std::string& key);
// Keys that continue the same recipe (train longer, log or checkpoint at another cadence, stop early):
// they may differ from the saved recipe, and the folder's config.toml then records the new values.
bool is_continuation_key(const std::string& key);

// Writes <run>/config.toml when the folder has none; otherwise compares the resolved config with the
// saved one and throws ConfigError naming every key that differs (except runtime and continuation
// keys, and generate.* when `allow_generate_changes`). Never touches anything before that check.
void claim_run_folder(const RunConfig& cfg, const std::string& stage, bool allow_generate_changes = true);

// Whether every key but the runtime ones equals the saved recipe's: what a read-only stage (generate)
// needs before it writes a file of the recipe (samples.json).
bool matches_saved_recipe(const RunConfig& cfg);

// The inputs every stage of the pipeline needs, checked up front: the model config parses and
// validates, data.paths match files (or the WordNet folder exists). Throws ConfigError/DataError.
void check_inputs(const RunConfig& cfg);

// A model folder, or a pointer to the one the user meant: "DIR: no config.json (did you mean DIR/model?)".
void check_model_dir(const std::string& dir);

}  // namespace dsforge::pipeline
