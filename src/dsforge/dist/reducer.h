// Gradient averaging for data parallelism, overlapped with the backward pass.
//
// Parameters are packed, in reverse registration order (roughly the order their gradients become
// ready), into flat buckets of about dist.bucket_mb. A hook on each parameter copies its gradient
// into its bucket slot as soon as autograd produces it; a full bucket starts its all-reduce at once,
// while the backward pass goes on. Buckets start strictly in index order, the same on every rank
// (Gloo matches collectives by order), so a bucket waiting for a parameter that got no gradient
// (an MoE expert no token chose) holds back the later ones until finish() fills it with zeros.
// A parameter no rank produced a gradient for keeps an undefined .grad, as in a single process.
//
// Gradient accumulation syncs once per optimizer step: begin_backward(false) for the first micro-
// batches (the hooks stand aside and autograd accumulates into .grad), begin_backward(true) for the
// last, whose hooks add the accumulated .grad into the bucket slot.
//
//   GradReducer reducer(comm, params, 25.0);
//   for (m ...) { reducer.begin_backward(m == accum - 1); loss.backward(); }
//   reducer.finish();   // every .grad is now the mean over ranks
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "dsforge/dist/comm.h"

namespace dsforge::dist {

class GradReducer {
 public:
  GradReducer(Comm& comm, std::vector<at::Tensor> params, double bucket_mb);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  void begin_backward(bool sync);
  void finish();

  size_t bucket_count() const { return buckets_.size(); }
  // Buckets whose all-reduce started inside the backward pass during the last synced step.
  int64_t launched_in_backward() const { return launched_in_backward_; }

 private:
  struct Bucket {
    at::Tensor flat;
    std::vector<size_t> params;  // indices into params_
    int64_t pending = 0;         // slots still waiting for a gradient in this backward
    Comm::Pending work;
  };
  void on_grad(size_t i, const at::Tensor& grad);
  void launch_ready();
  void fill_missing(Bucket& b);

  Comm& comm_;
  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_, offset_of_;
  std::vector<unsigned> hook_ids_;
  std::vector<uint8_t> got_grad_;  // this rank produced a gradient for param i in this step
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  bool sync_ = false, in_backward_ = false;
  int64_t launched_in_backward_ = 0;
};

}  // namespace dsforge::dist
