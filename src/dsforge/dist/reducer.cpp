#include "dsforge/dist/reducer.h"

#include <ATen/ATen.h>

namespace dsforge::dist {

GradReducer::GradReducer(Comm& comm, std::vector<at::Tensor> params, double bucket_mb)
    : comm_(comm), params_(std::move(params)) {
  const auto limit = static_cast<int64_t>(bucket_mb * (1 << 20));
  const size_t n = params_.size();
  bucket_of_.assign(n, 0);
  offset_of_.assign(n, 0);
  got_grad_.assign(n, 0);
  // Reverse order, one dtype per bucket; a parameter larger than the limit gets a bucket of its own.
  std::vector<int64_t> sizes;
  for (size_t k = n; k-- > 0;) {
    const at::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fresh = buckets_.empty() || sizes.back() + bytes > limit ||
                       params_[buckets_.back().params.front()].scalar_type() != p.scalar_type();
    if (fresh) {
      buckets_.emplace_back();
      sizes.push_back(0);
    }
    Bucket& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    offset_of_[k] = static_cast<size_t>(sizes.back() / static_cast<int64_t>(p.element_size()));
    sizes.back() += bytes;
    b.params.push_back(k);
  }
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const at::Tensor& first = params_[buckets_[i].params.front()];
    buckets_[i].flat = at::zeros({sizes[i] / static_cast<int64_t>(first.element_size())}, first.options());
  }
  for (size_t k = 0; k < n; ++k)
    hook_ids_.push_back(params_[k].register_hook([this, k](const at::Tensor& g) { on_grad(k, g); }));
}

GradReducer::~GradReducer() {
  for (size_t k = 0; k < params_.size(); ++k) params_[k].remove_hook(hook_ids_[k]);
}

void GradReducer::begin_backward(bool sync) {
  sync_ = sync;
  if (!sync || in_backward_) return;
  in_backward_ = true;
  next_launch_ = 0;
  launched_in_backward_ = 0;
  std::fill(got_grad_.begin(), got_grad_.end(), 0);
  for (auto& b : buckets_) b.pending = static_cast<int64_t>(b.params.size());
}

void GradReducer::on_grad(size_t k, const at::Tensor& grad) {
  if (!sync_) return;
  Bucket& b = buckets_[bucket_of_[k]];
  const at::Tensor& p = params_[k];
  at::Tensor slot = b.flat.narrow(0, static_cast<int64_t>(offset_of_[k]), p.numel()).view(p.sizes());
  // Earlier micro-batches of this step accumulated into .grad (autograd adds this one after the hook).
  if (got_grad_[k]) {  // autograd calls a leaf's hook once with the summed gradient; be safe anyway
    slot.add_(grad);
    return;
  }
  const at::Tensor& acc = p.grad();
  if (acc.defined()) at::add_out(slot, acc, grad);
  else slot.copy_(grad);
  got_grad_[k] = 1;
  if (--b.pending == 0) launch_ready();
}

void GradReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& b = buckets_[next_launch_++];
    b.work = comm_.allreduce_sum_async(b.flat, "gradient all-reduce");
    ++launched_in_backward_;
  }
}

void GradReducer::fill_missing(Bucket& b) {
  for (size_t k : b.params) {
    if (got_grad_[k]) continue;
    const at::Tensor& p = params_[k];
    at::Tensor slot = b.flat.narrow(0, static_cast<int64_t>(offset_of_[k]), p.numel()).view(p.sizes());
    // No gradient in the synced micro-batch; an earlier micro-batch's (in .grad) may still exist.
    if (p.grad().defined()) {
      slot.copy_(p.grad());
      got_grad_[k] = 1;
    } else {
      slot.zero_();
    }
  }
  b.pending = 0;
}

void GradReducer::finish() {
  if (!in_backward_) return;
  in_backward_ = false;
  sync_ = false;
  const int64_t in_backward = launched_in_backward_;
  at::NoGradGuard no_grad;
  for (size_t i = next_launch_; i < buckets_.size(); ++i) fill_missing(buckets_[i]);
  launch_ready();
  launched_in_backward_ = in_backward;
  // Which parameters any rank has a gradient for: the others stay without one, as in one process.
  at::Tensor used = at::empty({static_cast<int64_t>(params_.size())}, at::kFloat);
  std::copy(got_grad_.begin(), got_grad_.end(), used.data_ptr<float>());
  Comm::Pending used_work = comm_.allreduce_sum_async(used);
  for (auto& b : buckets_) b.work.wait();
  used_work.wait();
  const double inv = 1.0 / static_cast<double>(comm_.world_size());
  const float* u = used.data_ptr<float>();
  for (auto& b : buckets_) {
    b.flat.mul_(inv);
    for (size_t k : b.params) {
      at::Tensor& p = params_[k];
      if (u[k] == 0.0f) {
        p.mutable_grad() = at::Tensor();
        continue;
      }
      // .grad becomes a view of the bucket: no copy. zero_grad() drops it before the next step writes.
      p.mutable_grad() = b.flat.narrow(0, static_cast<int64_t>(offset_of_[k]), p.numel()).view(p.sizes());
    }
  }
}

}  // namespace dsforge::dist
