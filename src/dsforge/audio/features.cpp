#include "dsforge/audio/features.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "dsforge/core/error.h"

namespace dsforge::audio {
namespace {

std::mutex& fftw_planner_mutex() {  // FFTW's planner is not thread-safe; execution is
  static std::mutex m;
  return m;
}

double hz_to_mel(double f, const std::string& scale) {
  if (scale == "htk") return 2595.0 * std::log10(1.0 + f / 700.0);
  const double f_sp = 200.0 / 3, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp, logstep = std::log(6.4) / 27.0;
  return f >= min_log_hz ? min_log_mel + std::log(f / min_log_hz) / logstep : f / f_sp;
}

double mel_to_hz(double m, const std::string& scale) {
  if (scale == "htk") return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0);
  const double f_sp = 200.0 / 3, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp, logstep = std::log(6.4) / 27.0;
  return m >= min_log_mel ? min_log_hz * std::exp(logstep * (m - min_log_mel)) : f_sp * m;
}

}  // namespace

std::vector<double> mel_filterbank(int64_t n_freqs, double f_min, double f_max, int64_t n_mels, int64_t sample_rate,
                                   const std::string& norm, const std::string& scale) {
  if (scale != "htk" && scale != "slaney") throw ConfigError(fmt("mel_scale '", scale, "': expected htk or slaney"));
  if (!norm.empty() && norm != "slaney") throw ConfigError(fmt("mel_norm '", norm, "': expected slaney or empty"));
  // Frequencies of the FFT bins: linspace(0, sample_rate // 2, n_freqs), as torchaudio.
  std::vector<double> freqs(static_cast<size_t>(n_freqs));
  const double top = static_cast<double>(sample_rate / 2);
  for (int64_t i = 0; i < n_freqs; ++i)
    freqs[static_cast<size_t>(i)] = n_freqs == 1 ? 0.0 : top * static_cast<double>(i) / static_cast<double>(n_freqs - 1);
  const double m_min = hz_to_mel(f_min, scale), m_max = hz_to_mel(f_max, scale);
  std::vector<double> f_pts(static_cast<size_t>(n_mels + 2));
  for (int64_t k = 0; k < n_mels + 2; ++k)
    f_pts[static_cast<size_t>(k)] = mel_to_hz(m_min + (m_max - m_min) * static_cast<double>(k) / static_cast<double>(n_mels + 1), scale);
  std::vector<double> fb(static_cast<size_t>(n_freqs * n_mels), 0.0);
  for (int64_t i = 0; i < n_freqs; ++i)
    for (int64_t m = 0; m < n_mels; ++m) {
      const auto k = static_cast<size_t>(m);
      const double f = freqs[static_cast<size_t>(i)];
      const double down = (f_pts[k] - f) * -1.0 / (f_pts[k + 1] - f_pts[k]);
      const double up = (f_pts[k + 2] - f) / (f_pts[k + 2] - f_pts[k + 1]);
      double w = std::max(0.0, std::min(down, up));
      if (norm == "slaney") w *= 2.0 / (f_pts[k + 2] - f_pts[k]);
      fb[static_cast<size_t>(i * n_mels + m)] = w;
    }
  return fb;
}

struct FeatureExtractor::Plan {
  fftwf_plan plan = nullptr;
  ~Plan() {
    if (plan) {
      std::lock_guard<std::mutex> lock(fftw_planner_mutex());
      fftwf_destroy_plan(plan);
    }
  }
};

FeatureExtractor::FeatureExtractor(const FeatureOptions& opt) : opt_(opt), plan_(std::make_unique<Plan>()) {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw ConfigError("audio features: " + what);
  };
  need(opt_.sample_rate > 0, fmt("sample_rate ", opt_.sample_rate, " must be positive"));
  need(opt_.n_fft >= 2, fmt("n_fft ", opt_.n_fft, " must be >= 2"));
  if (opt_.win_length == 0) opt_.win_length = opt_.n_fft;
  need(opt_.win_length >= 1 && opt_.win_length <= opt_.n_fft, fmt("win_length ", opt_.win_length, " must be in [1, n_fft]"));
  if (opt_.hop_length == 0) opt_.hop_length = std::max<int64_t>(1, opt_.win_length / 2);
  need(opt_.hop_length >= 1, fmt("hop_length ", opt_.hop_length, " must be >= 1"));
  need(opt_.power > 0, fmt("power ", opt_.power, " must be positive"));
  if (opt_.f_max == 0) opt_.f_max = static_cast<double>(opt_.sample_rate) / 2;
  need(opt_.f_min >= 0 && opt_.f_min < opt_.f_max, fmt("f_min ", opt_.f_min, " must be in [0, f_max)"));
  need(opt_.f_max <= static_cast<double>(opt_.sample_rate) / 2,
       fmt("f_max ", opt_.f_max, " is above the Nyquist frequency ", opt_.sample_rate / 2));
  need(opt_.n_mels >= 1, fmt("n_mels ", opt_.n_mels, " must be >= 1"));
  need(opt_.n_mfcc >= 1 && opt_.n_mfcc <= opt_.n_mels, fmt("n_mfcc ", opt_.n_mfcc, " must be in [1, n_mels]"));

  // Periodic Hann window of win_length, centred in n_fft (torch.stft pads a shorter window so).
  window_.assign(static_cast<size_t>(opt_.n_fft), 0.0);
  const int64_t left = (opt_.n_fft - opt_.win_length) / 2;
  for (int64_t i = 0; i < opt_.win_length; ++i)
    window_[static_cast<size_t>(left + i)] = 0.5 - 0.5 * std::cos(2.0 * M_PI * static_cast<double>(i) / static_cast<double>(opt_.win_length));
  const int64_t n_freqs = opt_.n_fft / 2 + 1;
  fb_ = mel_filterbank(n_freqs, opt_.f_min, opt_.f_max, opt_.n_mels, opt_.sample_rate, opt_.mel_norm, opt_.mel_scale);
  for (int64_t m = 0; m < opt_.n_mels; ++m) {
    int64_t a = n_freqs, b = 0;
    for (int64_t i = 0; i < n_freqs; ++i)
      if (fb_[static_cast<size_t>(i * opt_.n_mels + m)] != 0) {
        a = std::min(a, i);
        b = i + 1;
      }
    fb_range_.emplace_back(a, std::max(a, b));
  }
  // Orthonormal DCT-II, [n_mels][n_mfcc] (torchaudio.functional.create_dct(n_mfcc, n_mels, "ortho")).
  dct_.assign(static_cast<size_t>(opt_.n_mels * opt_.n_mfcc), 0.0);
  for (int64_t n = 0; n < opt_.n_mels; ++n)
    for (int64_t k = 0; k < opt_.n_mfcc; ++k) {
      double v = std::cos(M_PI / static_cast<double>(opt_.n_mels) * (static_cast<double>(n) + 0.5) * static_cast<double>(k));
      if (k == 0) v *= 1.0 / std::sqrt(2.0);
      dct_[static_cast<size_t>(n * opt_.n_mfcc + k)] = v * std::sqrt(2.0 / static_cast<double>(opt_.n_mels));
    }

  std::lock_guard<std::mutex> lock(fftw_planner_mutex());
  float* in = fftwf_alloc_real(static_cast<size_t>(opt_.n_fft));
  fftwf_complex* out = fftwf_alloc_complex(static_cast<size_t>(n_freqs));
  plan_->plan = fftwf_plan_dft_r2c_1d(static_cast<int>(opt_.n_fft), in, out, FFTW_ESTIMATE);
  fftwf_free(in);
  fftwf_free(out);
  if (!plan_->plan) throw Error(fmt("FFTW: no plan for n_fft ", opt_.n_fft));
}

FeatureExtractor::~FeatureExtractor() = default;
FeatureExtractor::FeatureExtractor(FeatureExtractor&&) noexcept = default;
FeatureExtractor& FeatureExtractor::operator=(FeatureExtractor&&) noexcept = default;

int64_t FeatureExtractor::frames_for(int64_t samples) const {
  const int64_t padded = samples + (opt_.center ? 2 * (opt_.n_fft / 2) : 0);
  return padded < opt_.n_fft ? 0 : 1 + (padded - opt_.n_fft) / opt_.hop_length;
}

Features FeatureExtractor::power_spectrogram(const std::vector<float>& x, double power) const {
  const auto n = static_cast<int64_t>(x.size());
  const int64_t pad = opt_.center ? opt_.n_fft / 2 : 0;
  if ((opt_.center && n <= pad) || frames_for(n) < 1)
    throw DataError(fmt("clip of ", n, " samples is shorter than one frame (n_fft ", opt_.n_fft,
                        opt_.center ? ", centred: more than n_fft / 2 samples needed)" : ")"));
  auto sample = [&](int64_t i) {  // the reflect-padded signal
    i -= pad;
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return static_cast<double>(x[static_cast<size_t>(i)]);
  };
  const int64_t n_freqs = opt_.n_fft / 2 + 1, frames = frames_for(n);
  Features s{n_freqs, frames, std::vector<float>(static_cast<size_t>(n_freqs * frames))};
  float* in = fftwf_alloc_real(static_cast<size_t>(opt_.n_fft));
  fftwf_complex* out = fftwf_alloc_complex(static_cast<size_t>(n_freqs));
  for (int64_t t = 0; t < frames; ++t) {
    const int64_t start = t * opt_.hop_length;
    for (int64_t i = 0; i < opt_.n_fft; ++i)
      in[i] = static_cast<float>(window_[static_cast<size_t>(i)] * sample(start + i));
    fftwf_execute_dft_r2c(plan_->plan, in, out);
    for (int64_t f = 0; f < n_freqs; ++f) {
      const double re = out[f][0], im = out[f][1], p = re * re + im * im;
      s.data[static_cast<size_t>(f * frames + t)] =
          static_cast<float>(power == 2.0 ? p : power == 1.0 ? std::sqrt(p) : std::pow(std::sqrt(p), power));
    }
  }
  fftwf_free(in);
  fftwf_free(out);
  return s;
}

Features FeatureExtractor::spectrogram(const std::vector<float>& x) const { return power_spectrogram(x, opt_.power); }

Features FeatureExtractor::mel_spectrogram(const std::vector<float>& x) const {
  const Features s = power_spectrogram(x, 2.0);
  const int64_t T = s.frames, M = opt_.n_mels;
  Features mel{M, T, std::vector<float>(static_cast<size_t>(M * T))};
  std::vector<double> acc(static_cast<size_t>(T));
  for (int64_t m = 0; m < M; ++m) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t f = fb_range_[static_cast<size_t>(m)].first; f < fb_range_[static_cast<size_t>(m)].second; ++f) {
      const double w = fb_[static_cast<size_t>(f * M + m)];
      const float* row = &s.data[static_cast<size_t>(f * T)];
      for (int64_t t = 0; t < T; ++t) acc[static_cast<size_t>(t)] += w * row[t];
    }
    for (int64_t t = 0; t < T; ++t) mel.data[static_cast<size_t>(m * T + t)] = static_cast<float>(acc[static_cast<size_t>(t)]);
  }
  return mel;
}

Features FeatureExtractor::to_db(Features mel) const {
  float top = -INFINITY;
  for (float& v : mel.data) {
    v = static_cast<float>(10.0 * std::log10(std::max(static_cast<double>(v), 1e-10)));
    top = std::max(top, v);
  }
  if (opt_.top_db >= 0) {
    const auto floor = static_cast<float>(top - opt_.top_db);
    for (float& v : mel.data) v = std::max(v, floor);
  }
  return mel;
}

Features FeatureExtractor::log_mel(const std::vector<float>& x) const { return to_db(mel_spectrogram(x)); }

Features FeatureExtractor::mfcc(const std::vector<float>& x) const {
  Features l = mel_spectrogram(x);
  if (opt_.log_mels) {
    for (float& v : l.data) v = static_cast<float>(std::log(static_cast<double>(v) + 1e-6));
  } else {
    l = to_db(std::move(l));
  }
  const int64_t T = l.frames, M = opt_.n_mels, K = opt_.n_mfcc;
  Features c{K, T, std::vector<float>(static_cast<size_t>(K * T))};
  std::vector<double> acc(static_cast<size_t>(T));
  for (int64_t k = 0; k < K; ++k) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t m = 0; m < M; ++m) {
      const double w = dct_[static_cast<size_t>(m * K + k)];
      const float* row = &l.data[static_cast<size_t>(m * T)];
      for (int64_t t = 0; t < T; ++t) acc[static_cast<size_t>(t)] += w * row[t];
    }
    for (int64_t t = 0; t < T; ++t) c.data[static_cast<size_t>(k * T + t)] = static_cast<float>(acc[static_cast<size_t>(t)]);
  }
  return c;
}

Features FeatureExtractor::compute(const std::string& kind, const std::vector<float>& x) const {
  if (kind == "spectrogram") return spectrogram(x);
  if (kind == "mel") return mel_spectrogram(x);
  if (kind == "log-mel") return log_mel(x);
  if (kind == "mfcc") return mfcc(x);
  throw ConfigError(fmt("audio features: kind '", kind, "': expected spectrogram, mel, log-mel or mfcc"));
}

}  // namespace dsforge::audio
