// Replay: a bounded reservoir of earlier domains' token windows, mixed into each new batch.
//
// Reservoir sampling (Vitter's Algorithm R): the first `capacity` windows offered are kept; the n-th
// after that replaces a uniformly chosen kept window with probability capacity / n. After any number
// of offers every window offered so far is in the reservoir with the same probability, so a
// reservoir carried from domain to domain is a uniform sample of every window it has seen (domains
// weigh by their window counts). The reservoir and its count are saved next to the model
// (continual/replay.safetensors) so that the next stage continues the same sample.
//
//   Reservoir r(/*capacity=*/2048, /*window=*/129, /*seed=*/1);
//   r.offer(tokens.data());                       // window tokens, int64
//   at::Tensor rows = r.draw(4, rng);             // [4, 129] int64, uniform with replacement
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/core/safetensors.h"
#include "dsforge/core/splitmix.h"

namespace dsforge::continual {

class Reservoir {
 public:
  Reservoir(int64_t capacity, int64_t window, uint64_t seed);

  // Offers one window of `window()` tokens.
  void offer(const int64_t* tokens);
  // Offers every window of `window()` tokens starting every `stride` tokens of a token shard.
  void offer_shard(const std::string& shard_path, int64_t stride);

  int64_t capacity() const { return capacity_; }
  int64_t window() const { return window_; }
  int64_t size() const { return static_cast<int64_t>(kept_.size() / static_cast<size_t>(window_)); }
  int64_t seen() const { return seen_; }
  // Row i of the reservoir (window() tokens).
  const int64_t* row(int64_t i) const { return kept_.data() + i * window_; }
  // `n` rows drawn uniformly with replacement: [n, window] int64. DataError when empty.
  at::Tensor draw(int64_t n, SplitMix64& rng) const;

  // {"replay.windows": int32 [size, window], "replay.seen": int64 [1]}; and back (a window longer than
  // `window` is cut to it, a shorter one is refused with the file named).
  TensorMap to_tensors() const;
  static Reservoir from_tensors(const TensorMap& t, int64_t capacity, int64_t window, uint64_t seed, const std::string& origin);

 private:
  int64_t capacity_, window_;
  int64_t seen_ = 0;
  std::vector<int64_t> kept_;
  SplitMix64 rng_;
};

}  // namespace dsforge::continual
