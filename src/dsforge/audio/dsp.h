// Waveform processing for `dsforge audio prepare` and the loader's augmentation: resampling (the same
// windowed-sinc filter as torchaudio 0.13's `functional.resample`), loudness normalisation, silence
// trimming and mixing noise at a signal-to-noise ratio.
#pragma once
#include <cstdint>
#include <vector>

namespace dsforge::audio {

// torchaudio.functional.resample(x, from, to) with its defaults (sinc interpolation, Hann window,
// lowpass_filter_width 6, rolloff 0.99): ceil(to * n / from) samples. The rates are reduced by their gcd
// first, so 44100 -> 16000 is a 441 -> 160 polyphase filter.
std::vector<float> resample(const std::vector<float>& x, int64_t from, int64_t to, int64_t lowpass_filter_width = 6,
                            double rolloff = 0.99);

// The clip scaled so that its RMS is `target_dbfs` (dB re full scale), then scaled down if needed so that
// no sample exceeds `peak` in magnitude. A silent clip is returned unchanged.
std::vector<float> normalize_loudness(const std::vector<float>& x, double target_dbfs = -20.0, double peak = 0.99);

// Leading and trailing frames (frame_ms long) whose RMS is more than `threshold_db` below the loudest
// frame's removed, keeping `margin_ms` on each side; a clip with no frame above returns empty.
std::vector<float> trim_silence(const std::vector<float>& x, int64_t rate, double threshold_db = 40.0, double frame_ms = 10.0,
                                double margin_ms = 20.0);

// speech + noise scaled so that 10 log10(P_speech / P_noise) = snr_db; the noise is repeated or cut to
// the speech's length. Power is the mean square. A silent noise leaves the speech unchanged.
std::vector<float> mix_at_snr(const std::vector<float>& speech, const std::vector<float>& noise, double snr_db);

// Mean square of the samples (0 for none).
double mean_power(const std::vector<float>& x);

}  // namespace dsforge::audio
