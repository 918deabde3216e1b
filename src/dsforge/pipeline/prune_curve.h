// `dsforge prune --curve`: amount pruned against held-out bits per byte, per method, before and after
// recovery fine-tuning, written beside the pruned folders:
//
//   <out>/<method>-<amount>/        the one-shot pruned model
//   <out>/<method>-<amount>-rec/    the same pruning followed by recovery steps (with --recover-steps)
//   <out>/control-rec/              the unpruned model through the same recovery steps (what recovery
//                                   alone is worth: it also trains further on the same data)
//   <out>/curve.json, curve.md, curve.html
//
// Re-running the command reuses every finished folder (and resumes an interrupted recovery).
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/compress/prune.h"

namespace dsforge::pipeline {

struct PruneCurveOptions {
  std::string model;                  // the unpruned model folder
  std::string out;                    // the curve's folder
  std::string text;                   // held-out text, scored with `dsforge eval --text` (the model's seq_len)
  std::vector<std::string> methods;   // experts, heads, neurons, magnitude
  std::vector<double> amounts;        // each in (0, 1)
  compress::PruneOptions prune;       // calibration, scope, recovery (recover_steps, run_config, overrides)
};

// Returns the markdown table it also writes to <out>/curve.md.
std::string prune_curve(const PruneCurveOptions& opts);

}  // namespace dsforge::pipeline
