// Fitting training to a memory budget: measure what one micro-batch costs, then pick the largest
// micro-batch that fits and the gradient-accumulation steps that keep the global batch.
//
// The measurement is exact, not a formula: a fresh CPU copy of the model runs forward + backward at
// micro-batch 1 and 2 while a counting allocator tracks the peak bytes of live tensors; the
// difference is the cost of one more row. Weights, gradients and AdamW moments add 16 bytes per
// parameter (plus 2 for the cached bf16 weight copies under bf16 autocast).
#pragma once
#include <cstdint>
#include <string>

#include "dsforge/model/config.h"
#include "dsforge/model/layers.h"

namespace dsforge::train {

// Peak bytes of CPU tensors allocated while a scope is alive (all threads).
class TensorMemoryTracker {
 public:
  TensorMemoryTracker();   // installs a counting wrapper around the CPU allocator
  ~TensorMemoryTracker();  // puts the previous allocator back
  TensorMemoryTracker(const TensorMemoryTracker&) = delete;
  TensorMemoryTracker& operator=(const TensorMemoryTracker&) = delete;
  int64_t current() const;  // bytes allocated through the tracker and not yet freed
  int64_t peak() const;     // the maximum of current() since construction or reset_peak()
  void reset_peak();
};

struct MemoryProbe {
  int64_t state_bytes = 0;       // weights + gradients + optimizer moments (+ bf16 weight copies)
  int64_t activation_base = 0;   // fixed part of one forward + backward (gradients of the logits, workspaces)
  int64_t per_row_bytes = 0;     // each additional row of the micro-batch
  int64_t bytes_for(int64_t micro_batch) const { return state_bytes + activation_base + micro_batch * per_row_bytes; }
};

// Rows of model::training_row_length(mc, seq_len) tokens, the loss weighted as the run weighs it.
MemoryProbe probe_training_memory(const model::ModelConfig& mc, int64_t seq_len, bool bf16,
                                  const model::DropoutRates& dropout, double mtp_loss_weight);

struct BatchPlan {
  int64_t micro_batch = 1;
  int64_t accum_steps = 1;
  int64_t budget_bytes = 0;
  int64_t estimated_bytes = 0;
  std::string reason;  // one line for the log
};

// The largest divisor of global_batch whose estimate (with 10% headroom) fits `budget_bytes`.
// Throws Error naming train.memory_gb when even micro-batch 1 does not fit.
BatchPlan plan_batch(const MemoryProbe& probe, int64_t global_batch, int64_t budget_bytes);

// MemAvailable from /proc/meminfo (bytes); 0 when unknown.
int64_t available_memory_bytes();

}  // namespace dsforge::train
