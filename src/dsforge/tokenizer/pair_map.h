// An open-addressing hash map keyed by a BPE pair (left id << 32 | right id), for the hot loops of
// BPE training and encoding where std::unordered_map's node allocations and modulo dominate.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsforge::tok {

// Open-addressing map from a pair key to V: linear probing over a power-of-two table with
// Fibonacci hashing. Never erases (training keeps zero counts instead), so probing stays simple;
// references are valid until the next insertion.
template <typename V>
class PairMap {
 public:
  static constexpr uint64_t kEmpty = ~0ull;  // pair (-1, -1) cannot occur
  explicit PairMap(size_t capacity = 1 << 16) { resize(capacity); }
  V& operator[](uint64_t k) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    size_t i = slot(k);
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    if (keys_[i] == kEmpty) {
      keys_[i] = k;
      ++size_;
    }
    return vals_[i];
  }
  V* find(uint64_t k) { return const_cast<V*>(static_cast<const PairMap*>(this)->find(k)); }
  const V* find(uint64_t k) const {
    for (size_t i = slot(k);; i = (i + 1) & mask_) {
      if (keys_[i] == k) return &vals_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }
  template <typename F>
  void for_each(F&& f) {
    for (size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] != kEmpty) f(keys_[i], vals_[i]);
  }

 private:
  size_t slot(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  void resize(size_t cap) {
    keys_.assign(cap, kEmpty);
    vals_.clear();
    vals_.resize(cap);
    mask_ = cap - 1;
    shift_ = 64 - static_cast<int>(__builtin_ctzll(cap));
    size_ = 0;
  }
  void grow() {
    std::vector<uint64_t> keys = std::move(keys_);
    std::vector<V> vals = std::move(vals_);
    resize(keys.size() * 2);
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i] != kEmpty) (*this)[keys[i]] = std::move(vals[i]);
  }
  std::vector<uint64_t> keys_;
  std::vector<V> vals_;
  size_t size_ = 0, mask_ = 0;
  int shift_ = 0;
};

}  // namespace dsforge::tok
