// Seeded audio augmentation, for the loader and for listening (`dsforge audio augment`): a random time
// shift, speed perturbation (resampling, so pitch moves with speed, as Kaldi's and torchaudio's speed
// perturbation), noise at a chosen SNR, and SpecAugment's frequency and time masks (Park et al. 2019) on
// features. The same seed gives the same result.
#pragma once
#include <cstdint>
#include <vector>

#include "dsforge/audio/features.h"

namespace dsforge::audio {

struct WaveAugment {
  double max_shift_seconds = 0.0;  // shift by a uniform amount in [-max, max]; vacated samples are zeros
  double speed_min = 1.0, speed_max = 1.0;  // speed factor drawn uniformly (in steps of 0.01)
  double snr_db = -1.0;            // >= 0: white Gaussian noise at this SNR; < 0: none
};
struct SpecAugment {
  int64_t freq_masks = 0, freq_width = 0;  // masks of up to `width` rows (F in the paper)
  int64_t time_masks = 0, time_width = 0;  // masks of up to `width` frames (T)
};

// The augmented clip (its length changes with the speed: n / factor samples).
std::vector<float> augment_wave(const std::vector<float>& x, int64_t rate, const WaveAugment& a, uint64_t seed);
// Masked rows and frames are set to the features' mean (torchaudio masks with a constant; the mean keeps
// a log-mel's level). Returns how many values were masked.
int64_t spec_augment(Features& f, const SpecAugment& a, uint64_t seed);

// Pieces, each deterministic: shift by `samples` (positive = later), speed by `factor` (0.5..2).
std::vector<float> time_shift(const std::vector<float>& x, int64_t samples);
std::vector<float> change_speed(const std::vector<float>& x, double factor);

}  // namespace dsforge::audio
