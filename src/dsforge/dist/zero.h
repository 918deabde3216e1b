// ZeRO stage 1 (Rajbhandari et al. 2020): each rank keeps the AdamW moments of its own share of the
// parameters, steps only those, and sends the updated values to the other ranks. Optimizer memory
// per rank falls from 2P floats to about 2P/W.
//
// Gloo has no reduce-scatter on CPU in libtorch 1.13, so gradients arrive by the same bucketed
// all-reduce as plain DDP (every rank holds the full averaged gradient, which also gives every rank
// the same global norm for clipping); only the moments are sharded.
//
//   std::vector<int> owner = partition_params(numels, comm.world_size());
//   opt.step();                                   // owned parameters only
//   broadcast_from_owners(comm, params, owner);   // everyone has every updated parameter
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "dsforge/dist/comm.h"

namespace dsforge::dist {

// Owner rank of each parameter: largest first, each to the rank with the fewest elements so far
// (ties to the lower rank). Deterministic, so every rank computes the same partition.
std::vector<int> partition_params(const std::vector<int64_t>& numels, int world);

// For every rank r, the tensors r owns go to all ranks (one flat broadcast per owner). Entries a rank
// does not own may be undefined: they are allocated with `shapes` and `options` and filled.
void broadcast_from_owners(Comm& comm, std::vector<at::Tensor>& tensors, const std::vector<int>& owner,
                           const std::vector<std::vector<int64_t>>& shapes, at::TensorOptions options);

}  // namespace dsforge::dist
