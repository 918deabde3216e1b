#include "dsforge/audio/augment.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "dsforge/audio/dsp.h"
#include "dsforge/core/error.h"
#include "dsforge/core/splitmix.h"

namespace dsforge::audio {

std::vector<float> time_shift(const std::vector<float>& x, int64_t samples) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size(), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + samples;
    if (j >= 0 && j < n) y[static_cast<size_t>(j)] = x[static_cast<size_t>(i)];
  }
  return y;
}

std::vector<float> change_speed(const std::vector<float>& x, double factor) {
  if (factor < 0.5 || factor > 2.0) throw ConfigError(fmt("speed factor ", factor, " must be in [0.5, 2]"));
  // Played `factor` times faster: resampled from factor * 100 to 100 (a small polyphase filter).
  const auto from = static_cast<int64_t>(std::llround(factor * 100));
  return resample(x, from, 100);
}

std::vector<float> augment_wave(const std::vector<float>& x, int64_t rate, const WaveAugment& a, uint64_t seed) {
  if (a.speed_min > a.speed_max) throw ConfigError(fmt("speed range ", a.speed_min, "..", a.speed_max, " is empty"));
  SplitMix64 rng(seed);
  std::vector<float> y = x;
  if (a.speed_min != 1.0 || a.speed_max != 1.0) {
    const double steps = std::round((a.speed_max - a.speed_min) * 100);
    const double factor = a.speed_min + std::floor(rng.uniform() * (steps + 1)) / 100;
    if (std::fabs(factor - 1.0) > 1e-9) y = change_speed(y, factor);
  }
  if (a.max_shift_seconds > 0) {
    const auto max = static_cast<int64_t>(a.max_shift_seconds * static_cast<double>(rate));
    y = time_shift(y, static_cast<int64_t>(std::floor(rng.uniform() * static_cast<double>(2 * max + 1))) - max);
  }
  if (a.snr_db >= 0) {
    std::mt19937_64 g(rng.next());
    std::normal_distribution<double> n(0.0, 1.0);
    std::vector<float> noise(y.size());
    for (float& v : noise) v = static_cast<float>(n(g));
    y = mix_at_snr(y, noise, a.snr_db);
  }
  return y;
}

int64_t spec_augment(Features& f, const SpecAugment& a, uint64_t seed) {
  if (f.data.empty()) return 0;
  double mean = 0;
  for (float v : f.data) mean += v;
  mean /= static_cast<double>(f.data.size());
  std::vector<char> masked(f.data.size(), 0);
  SplitMix64 rng(seed);
  auto mask = [&](int64_t count, int64_t width, int64_t extent, bool rows) {
    for (int64_t k = 0; k < count; ++k) {
      const auto w = static_cast<int64_t>(std::floor(rng.uniform() * static_cast<double>(std::min(width, extent) + 1)));
      const auto start = static_cast<int64_t>(std::floor(rng.uniform() * static_cast<double>(extent - w + 1)));
      for (int64_t i = start; i < start + w; ++i)
        for (int64_t j = 0; j < (rows ? f.frames : f.rows); ++j)
          masked[static_cast<size_t>(rows ? i * f.frames + j : j * f.frames + i)] = 1;
    }
  };
  mask(a.freq_masks, a.freq_width, f.rows, true);
  mask(a.time_masks, a.time_width, f.frames, false);
  int64_t n = 0;
  for (size_t i = 0; i < masked.size(); ++i)
    if (masked[i]) {
      f.data[i] = static_cast<float>(mean);
      ++n;
    }
  return n;
}

}  // namespace dsforge::audio
