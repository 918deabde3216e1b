// Data parallelism as the training loop sees it: everything that crosses ranks in one object. With no
// communicator every method is the one-process identity, so the loop has no rank branches.
//
// Rank 0 reads and writes files; it broadcasts what it restored (weights, optimizer moments, scalars,
// each rank's random stream), gathers what a checkpoint needs (ZeRO-1 moments, random streams), and
// every step one all-reduce carries the losses, a stop request and the task's summed tensors.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/core/safetensors.h"
#include "dsforge/train/optim.h"

namespace dsforge::dist {
class Comm;
}

namespace dsforge::train {

class DataParallel {
 public:
  // `comm` may be null (one process); not owned.
  DataParallel(dist::Comm* comm, bool zero1, uint64_t seed);

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool lead() const { return rank_ == 0; }
  bool active() const { return comm_ != nullptr; }
  int local_world() const;  // ranks on this host (they share its cores and memory)
  dist::Comm* comm() const { return comm_; }

  // ZeRO-1 ownership of each parameter's optimizer state (empty = every rank owns all).
  std::vector<bool> owned(const std::vector<at::Tensor>& params);
  // After construction of the optimizer: the gradient reducer and a log line describing the setup.
  void attach(const std::vector<at::Tensor>& params, const std::vector<std::string>& names, double bucket_mb);
  std::string describe(int64_t rows_per_rank, const AdamW& opt) const;

  // Every rank checks the same value (the resolved config) before training.
  void agree(const std::string& what, const std::string& value);
  // A restore error on rank 0 becomes the same error on every rank.
  void share_error(std::string& error);
  // Rank 0's `text` on every rank.
  std::string share_text(const std::string& text);
  void broadcast_module(torch::nn::Module& m);
  void broadcast_scalars(at::Tensor& doubles);
  // Rank 0's moments (from a checkpoint file) to the ranks that own them.
  void broadcast_moments(AdamW& opt, const TensorMap* lead_state);

  // Random streams: "cpu" (rank 0's) and "cpu.rank<r>" on rank 0; each rank restores its own.
  TensorMap gather_rng(c10::Device device);
  void scatter_rng(const TensorMap* lead_states, c10::Device device, int64_t step);

  // The full optimizer state on rank 0 (ZeRO-1 gathers the shards; a collective every rank calls).
  TensorMap gather_optimizer(const AdamW& opt);
  // After a ZeRO-1 step: every rank gets every updated parameter.
  void share_updated_params();

  // The backward pass of a step's last micro-batch starts the gradient all-reduce.
  void begin_backward(bool last_micro_batch);
  void finish_backward();
  int launched_in_backward() const;
  int bucket_count() const;

  // One all-reduce per step: the mean of the losses, whether any rank saw a stop request, and the
  // sums of `sums` in place.
  void reduce_step(double& loss, double& aux, bool& stop, std::vector<at::Tensor>& sums);

 private:
  dist::Comm* comm_;
  bool zero1_;
  uint64_t seed_;
  int rank_ = 0, world_ = 1;
  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<int> owner_;
  struct ReducerHolder;
  std::shared_ptr<ReducerHolder> reducer_;
};

}  // namespace dsforge::train
