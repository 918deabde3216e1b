// A shuffle whose result is the same on every standard library: Fisher-Yates over std::mt19937_64
// (whose output the standard fixes) with plain modulo, where std::shuffle's algorithm is left to the
// implementation. The token loader, the fine-tuning tasks and the data splits all use it.
//
//   shuffle_in_place(order, seed);
#pragma once
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace dsforge {

template <typename T>
void shuffle_in_place(std::vector<T>& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng() % static_cast<uint64_t>(i));
    std::swap(v[i - 1], v[j]);
  }
}

}  // namespace dsforge
