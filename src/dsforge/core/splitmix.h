// A small, fast, seedable generator (SplitMix64, Steele et al. 2014) whose sequence is fixed on every
// standard library (std:: distributions are not): replay and Fisher draws, word2vec's sampling and the
// image augmentation use it instead of libtorch's global generator (the trainer's dropout stream).
#pragma once
#include <cstdint>

namespace dsforge {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform in [0, n) without modulo bias: the top partial block of residues is rejected.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }

 private:
  uint64_t s_;
};

}  // namespace dsforge
