// The search space of a hyperparameter search: a TOML file of parameters, each a run-config key
// (`train.lr`) or a field of the model config (`model.n_routed_experts`), with a range or a set of
// choices, and optionally a condition on a categorical parent.
//
//   ["train.lr"]                      # float, log-uniform
//   type = "float"
//   low = 1e-4
//   high = 1e-2
//   log = true
//   ["train.schedule"]
//   type = "categorical"
//   choices = ["cosine", "wsd"]
//   ["train.decay_fraction"]          # only sampled when the schedule is "wsd"
//   type = "float"
//   low = 0.1
//   high = 0.4
//   enabled_if = { "train.schedule" = ["wsd"] }
//   ["model.n_routed_experts"]        # int (step 1 unless `step` says otherwise)
//   type = "int"
//   low = 4
//   high = 16
//   step = 4
//
// Samplers work in an internal coordinate per parameter (search/sampler.h): log(x) for log-scaled
// numbers, x for linear ones, the choice index for categorical ones. A trial's `Params` holds the
// active parameters only, each as its value (numbers) or choice index (categorical).
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/core/run_config.h"

namespace dsforge::search {

enum class ParamKind { kFloat, kInt, kCategorical };

struct Param {
  std::string name;  // "train.lr" or "model.<field>"
  ParamKind kind = ParamKind::kFloat;
  double low = 0, high = 1;
  bool log = false;
  double step = 0;  // 0 = continuous (floats); ints default to 1
  std::vector<nlohmann::json> choices;  // categorical: numbers, strings or booleans
  std::string parent;                   // "" = always active
  std::vector<int64_t> parent_choices;  // indices into the parent's choices that enable this one

  bool numeric() const { return kind != ParamKind::kCategorical; }
  // The internal coordinate's range: [low, high], widened by step/2 for discrete values, in log space when log.
  double internal_low() const;
  double internal_high() const;
  double to_internal(double value) const;
  // The nearest valid value of an internal coordinate (rounded to the step, clipped to [low, high]).
  double from_internal(double u) const;
  // The value as JSON: a number (integer for ints) or the choice.
  nlohmann::json value_json(double v) const;
  // "key=value" as a run-config override would write it.
  std::string override_text(double v) const;
};

using Params = std::map<std::string, double>;

struct SearchSpace {
  std::vector<Param> params;  // parents before their children
  std::string source;         // the file it came from

  const Param* find(const std::string& name) const;
  // Whether `p` is enabled by the parents already in `assigned`.
  bool active(const Param& p, const Params& assigned) const;
  // Canonical JSON; its hash identifies the space of a study.
  nlohmann::json to_json() const;
  std::string hash() const;
  nlohmann::json params_json(const Params& params) const;
  Params params_from_json(const nlohmann::json& j) const;
  // The unconditional parameters (what multivariate samplers model jointly).
  std::vector<const Param*> unconditional() const;
};

// The inverse of SearchSpace::to_json (a study's stored space).
SearchSpace space_from_json(const nlohmann::json& j, const std::string& source);

// Reads and validates a space file against `base` (the run config the trials start from): every key
// exists and has the parameter's type, ranges are non-empty, log ranges positive, choices valid
// values of the key, parents categorical and declared. Throws ConfigError naming the file and key.
SearchSpace load_search_space(const std::string& path, const RunConfig& base);
SearchSpace parse_search_space(const std::string& toml_text, const std::string& origin, const RunConfig& base);

// The run config of one trial: `base` with the trial's run-config keys applied. Model-config keys
// (model.<field>) are returned in `model_fields` for the caller to apply to the model config.
RunConfig apply_params(const SearchSpace& space, const RunConfig& base, const Params& params,
                       nlohmann::json* model_fields = nullptr);
// `base`'s model config (preset or file) as JSON with `fields` applied and validated.
std::string model_config_with(const RunConfig& base, const nlohmann::json& fields);

}  // namespace dsforge::search
