// Spectrogram, mel spectrogram, log-mel (dB) and MFCC, defined as torchaudio 0.13's transforms with the
// same parameters (tests compare them on real clips):
//   spectrogram      = |STFT|^power: periodic Hann window of win_length centred in n_fft, hop, the signal
//                      reflect-padded by n_fft / 2 on both sides when `center`  (transforms.Spectrogram)
//   mel_spectrogram  = spectrogram (power 2) x triangular filters on the HTK or Slaney mel scale,
//                      optional Slaney area norm                                   (transforms.MelSpectrogram)
//   log_mel          = 10 log10(max(mel, 1e-10)), floored at (clip max - top_db) when top_db >= 0
//                                                      (transforms.AmplitudeToDB("power", top_db))
//   mfcc             = orthonormal DCT-II of log_mel with top_db 80, first n_mfcc   (transforms.MFCC)
// The FFT is FFTW's (single precision); filters and sums in double. Output is [rows, frames] row-major,
// torchaudio's (..., freq, time) layout.
//
//   FeatureExtractor fx(FeatureOptions{});           // 16 kHz, n_fft 400, hop 200, 128 mels, 40 MFCCs
//   Features m = fx.mfcc(clip.samples);              // m.rows = 40, m.frames = 1 + n / 200
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsforge::audio {

struct FeatureOptions {
  int64_t sample_rate = 16000;
  int64_t n_fft = 400;
  int64_t win_length = 0;    // 0 = n_fft
  int64_t hop_length = 0;    // 0 = win_length / 2
  double power = 2.0;        // spectrogram: 1 = magnitude, 2 = power
  bool center = true;
  int64_t n_mels = 128;
  double f_min = 0.0;
  double f_max = 0.0;        // 0 = sample_rate / 2
  std::string mel_scale = "htk";  // htk | slaney
  std::string mel_norm;           // "" | slaney
  double top_db = 80.0;      // log_mel and MFCC floor below the clip's max; < 0 = none
  int64_t n_mfcc = 40;
  bool log_mels = false;     // MFCC over ln(mel + 1e-6) instead of dB (torchaudio's log_mels)
};

struct Features {
  int64_t rows = 0, frames = 0;
  std::vector<float> data;  // [rows][frames]
  float at(int64_t r, int64_t t) const { return data[static_cast<size_t>(r * frames + t)]; }
};

// torchaudio.functional.melscale_fbanks: [n_freqs][n_mels] row-major.
std::vector<double> mel_filterbank(int64_t n_freqs, double f_min, double f_max, int64_t n_mels, int64_t sample_rate,
                                   const std::string& norm, const std::string& scale);

class FeatureExtractor {
 public:
  // ConfigError naming the option for impossible settings (n_fft < 2, hop < 1, win_length > n_fft,
  // f_max above Nyquist, n_mfcc > n_mels, ...).
  explicit FeatureExtractor(const FeatureOptions& opt);
  ~FeatureExtractor();
  FeatureExtractor(FeatureExtractor&&) noexcept;
  FeatureExtractor& operator=(FeatureExtractor&&) noexcept;

  // DataError "clip of N samples is shorter than one frame ..." when the clip cannot fill one frame
  // (with `center`, reflect padding needs more than n_fft / 2 samples). Thread-safe.
  Features spectrogram(const std::vector<float>& x) const;
  Features mel_spectrogram(const std::vector<float>& x) const;
  Features log_mel(const std::vector<float>& x) const;
  Features mfcc(const std::vector<float>& x) const;
  // By name: "spectrogram", "mel", "log-mel", "mfcc".
  Features compute(const std::string& kind, const std::vector<float>& x) const;
  int64_t frames_for(int64_t samples) const;

 private:
  struct Plan;
  FeatureOptions opt_;
  std::unique_ptr<Plan> plan_;
  std::vector<double> window_;      // n_fft, the window centred
  std::vector<double> fb_;          // [n_freqs][n_mels]
  std::vector<std::pair<int64_t, int64_t>> fb_range_;  // per mel: nonzero frequency rows [a, b)
  std::vector<double> dct_;         // [n_mels][n_mfcc]
  Features power_spectrogram(const std::vector<float>& x, double power) const;
  Features to_db(Features mel) const;
};

}  // namespace dsforge::audio
