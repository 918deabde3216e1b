#include "dsforge/dist/zero.h"

#include <ATen/ATen.h>

#include <numeric>

namespace dsforge::dist {

std::vector<int> partition_params(const std::vector<int64_t>& numels, int world) {
  std::vector<size_t> order(numels.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return numels[a] > numels[b]; });
  std::vector<int64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owner(numels.size(), 0);
  for (size_t i : order) {
    const auto r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = static_cast<int>(r);
    load[r] += numels[i];
  }
  return owner;
}

void broadcast_from_owners(Comm& comm, std::vector<at::Tensor>& tensors, const std::vector<int>& owner,
                           const std::vector<std::vector<int64_t>>& shapes, at::TensorOptions options) {
  at::NoGradGuard no_grad;
  for (int r = 0; r < comm.world_size(); ++r) {
    std::vector<size_t> mine;
    int64_t total = 0;
    for (size_t i = 0; i < tensors.size(); ++i)
      if (owner[i] == r) {
        mine.push_back(i);
        total += c10::multiply_integers(shapes[i]);
      }
    if (mine.empty()) continue;
    at::Tensor flat;
    if (comm.rank() == r) {
      std::vector<at::Tensor> parts;
      for (size_t i : mine) parts.push_back(tensors[i].reshape(-1).to(options.dtype().toScalarType()));
      flat = at::cat(parts);
    } else {
      flat = at::empty({total}, options);
    }
    comm.broadcast(flat, r);
    if (comm.rank() == r) continue;
    int64_t off = 0;
    for (size_t i : mine) {
      const int64_t n = c10::multiply_integers(shapes[i]);
      at::Tensor src = flat.narrow(0, off, n).view(shapes[i]);
      if (tensors[i].defined()) tensors[i].copy_(src);
      else tensors[i] = src.clone();
      off += n;
    }
  }
}

}  // namespace dsforge::dist
