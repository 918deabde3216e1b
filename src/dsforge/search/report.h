// What a study says: every trial as JSON, parameter importance, and the text report of
// `dsforge search report` (summary, best trial, optimisation history, importance).
//
// Parameter importance is a first-order variance decomposition ("fANOVA-lite"): for each parameter,
// over the complete trials that have it, the share of the objective's variance explained by the
// parameter alone, eta^2 = SS_between / SS_total, where a numerical parameter's values are cut into
// min(5, ceil(sqrt(n))) equal-count bins by rank and a categorical parameter's groups are its choices.
// The shares are normalised to sum to 1. Interactions are not attributed (unlike full fANOVA), and a
// parameter that only matters together with another one scores low.
//
// Free of libtorch.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/search/sampler.h"
#include "dsforge/search/study.h"

namespace dsforge::search {

nlohmann::json trials_json(const SearchSpace& space, const std::vector<TrialRecord>& trials);
// parameter -> eta^2 (raw, before normalisation); parameters with fewer than 3 complete trials are absent.
std::map<std::string, double> param_importance(const SearchSpace& space, const std::vector<TrialRecord>& trials);
// The complete trial with the lowest value; nullptr when none completed.
const TrialRecord* best_trial(const std::vector<TrialRecord>& trials);
std::string search_report_text(const SearchSpace& space, const std::vector<TrialRecord>& trials);
// Cumulative training steps after each trial, in trial order: each trial counts the last step it reported
// a validation loss at (a pruned trial: where it stopped), less the step it started from when
// `start_steps` has it (a population-based training segment). The compute axis of a pruned search.
std::vector<double> steps_spent(const std::vector<TrialRecord>& trials, const std::map<int64_t, int64_t>& start_steps = {});
// The same as one self-contained HTML page (inline SVG): the optimisation history (each complete trial's
// value and the best so far, by trial and by training steps spent), every trial's validation curve (pruned ones end where they stopped),
// parallel coordinates (one axis per parameter and one for the value; complete trials shaded by value,
// pruned ones grey), the parameter importance as bars, and the text report.
// `extra_html` goes after the summary line (the population-based training section); `start_steps` as for
// steps_spent.
std::string search_report_html(const SearchSpace& space, const std::vector<TrialRecord>& trials, const std::string& title,
                               const std::string& extra_html = "", const std::map<int64_t, int64_t>& start_steps = {});
// Each PBT trial's first step (generation x interval).
std::map<int64_t, int64_t> pbt_start_steps(const std::vector<LineageRecord>& lineage, int64_t interval);
// Population-based training (search/pbt.h): every member's schedule (per generation its trial, steps,
// hyperparameters, value, and the trial it exploited or continued), the training steps of all
// segments together, the best member by its final value.
nlohmann::json pbt_json(const SearchSpace& space, const std::vector<TrialRecord>& trials, const std::vector<LineageRecord>& lineage,
                        int64_t interval);
// The HTML section: each member's validation loss over the steps, each hyperparameter's schedule per
// member (one chart per parameter), and the lineage table (who copied whom, each generation's losses).
std::string pbt_report_html(const SearchSpace& space, const std::vector<TrialRecord>& trials, const std::vector<LineageRecord>& lineage,
                            int64_t interval);

}  // namespace dsforge::search
