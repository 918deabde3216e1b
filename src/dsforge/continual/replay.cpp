#include "dsforge/continual/replay.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "dsforge/core/error.h"
#include "dsforge/data/shards.h"

namespace dsforge::continual {

Reservoir::Reservoir(int64_t capacity, int64_t window, uint64_t seed) : capacity_(capacity), window_(window), rng_(seed) {
  if (capacity < 1) throw ConfigError(fmt("key 'continual.replay_capacity': ", capacity, " must be at least 1"));
  if (window < 2) throw ConfigError(fmt("replay: window of ", window, " tokens; need at least 2"));
}

void Reservoir::offer(const int64_t* tokens) {
  ++seen_;
  if (size() < capacity_) {
    kept_.insert(kept_.end(), tokens, tokens + window_);
    return;
  }
  // Algorithm R: keep the seen_-th window with probability capacity / seen_, in a uniform slot.
  const uint64_t j = rng_.below(static_cast<uint64_t>(seen_));
  if (j < static_cast<uint64_t>(capacity_)) std::copy(tokens, tokens + window_, kept_.begin() + static_cast<int64_t>(j) * window_);
}

void Reservoir::offer_shard(const std::string& shard_path, int64_t stride) {
  if (stride < 1) throw ConfigError(fmt("replay: stride ", stride, " must be at least 1"));
  data::TokenShard shard(shard_path);
  std::vector<int64_t> buf(static_cast<size_t>(window_));
  const auto w = static_cast<uint64_t>(window_);
  for (uint64_t start = 0; start + w <= shard.size(); start += static_cast<uint64_t>(stride)) {
    shard.copy(start, w, buf.data());
    offer(buf.data());
  }
}

at::Tensor Reservoir::draw(int64_t n, SplitMix64& rng) const {
  if (size() == 0) throw DataError("replay: the reservoir is empty (no earlier-domain windows to replay)");
  at::Tensor out = at::empty({n, window_}, at::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(rng.below(static_cast<uint64_t>(size())));
    std::copy(row(r), row(r) + window_, o + i * window_);
  }
  return out;
}

TensorMap Reservoir::to_tensors() const {
  at::Tensor w = at::empty({size(), window_}, at::kLong);
  std::copy(kept_.begin(), kept_.end(), w.data_ptr<int64_t>());
  at::Tensor seen = at::full({1}, seen_, at::kLong);
  return {{"replay.windows", w.to(at::kInt)}, {"replay.seen", seen}};
}

Reservoir Reservoir::from_tensors(const TensorMap& t, int64_t capacity, int64_t window, uint64_t seed, const std::string& origin) {
  auto w = t.find("replay.windows"), s = t.find("replay.seen");
  if (w == t.end() || s == t.end() || w->second.dim() != 2 || s->second.numel() != 1)
    throw CheckpointError(fmt(origin, ": expected tensors replay.windows [n, window] and replay.seen [1]"));
  const at::Tensor win = w->second.to(at::kLong).contiguous();
  if (win.size(1) < window)
    throw CheckpointError(fmt(origin, ": replay windows of ", win.size(1), " tokens, this run needs ", window,
                              " (train.seq_len + 1 + MTP depth): lower train.seq_len or start a new reservoir"));
  Reservoir r(capacity, window, seed);
  r.seen_ = s->second.to(at::kLong).item<int64_t>();
  // A smaller capacity than the stored one keeps a uniformly chosen subset of the rows (a uniform
  // sub-sample of a uniform sample is uniform): a partial Fisher-Yates shuffle of the row indices.
  const int64_t stored = win.size(0), keep = std::min<int64_t>(stored, capacity);
  std::vector<int64_t> idx(static_cast<size_t>(stored));
  for (int64_t i = 0; i < stored; ++i) idx[static_cast<size_t>(i)] = i;
  if (keep < stored)
    for (int64_t i = 0; i < keep; ++i)
      std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>(i + static_cast<int64_t>(r.rng_.below(static_cast<uint64_t>(stored - i))))]);
  const at::Tensor cut = win.narrow(1, 0, window).contiguous();
  for (int64_t i = 0; i < keep; ++i) {
    const int64_t* src = cut.data_ptr<int64_t>() + idx[static_cast<size_t>(i)] * window;
    r.kept_.insert(r.kept_.end(), src, src + window);
  }
  if (r.seen_ < r.size()) r.seen_ = r.size();
  return r;
}

}  // namespace dsforge::continual
