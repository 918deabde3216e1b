#include "dsforge/audio/dsp.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "dsforge/core/error.h"

namespace dsforge::audio {

std::vector<float> resample(const std::vector<float>& x, int64_t from, int64_t to, int64_t lowpass_filter_width, double rolloff) {
  if (from <= 0 || to <= 0) throw ConfigError(fmt("resample: rates ", from, " -> ", to, " must be positive"));
  if (lowpass_filter_width < 1) throw ConfigError("resample: lowpass_filter_width must be >= 1");
  const int64_t g = std::gcd(from, to), orig = from / g, target = to / g;
  if (orig == target || x.empty()) return x;
  // One kernel per output phase j: a Hann-windowed sinc low-passed at min(orig, target) * rolloff.
  const double base = static_cast<double>(std::min(orig, target)) * rolloff;
  const auto lw = static_cast<double>(lowpass_filter_width);
  const auto width = static_cast<int64_t>(std::ceil(lw * static_cast<double>(orig) / base));
  const int64_t taps = 2 * width + orig;
  // In single precision and in torchaudio's order of operations, so that the two filters agree to the
  // last bits (a double-precision kernel differs from torchaudio's float one by ~2e-5 relative).
  std::vector<double> kernel(static_cast<size_t>(target * taps));
  const auto basef = static_cast<float>(base), lwf = static_cast<float>(lw), pif = static_cast<float>(M_PI);
  const auto scale = static_cast<float>(base / static_cast<double>(orig));
  for (int64_t j = 0; j < target; ++j)
    for (int64_t m = 0; m < taps; ++m) {
      const float idx = static_cast<float>(m - width) / static_cast<float>(orig);
      float t = static_cast<float>(-j) / static_cast<float>(target) + idx;
      t *= basef;
      t = std::clamp(t, -lwf, lwf);
      float window = std::cos(t * pif / lwf / 2.0f);
      window *= window;
      t *= pif;
      const float k = t == 0.0f ? 1.0f : std::sin(t) / t;
      kernel[static_cast<size_t>(j * taps + m)] = static_cast<double>(k * (window * scale));
    }
  // Strided convolution over x padded with `width` zeros before and width + orig after.
  const auto n = static_cast<int64_t>(x.size());
  const int64_t blocks = n / orig + 1;
  const auto out_len = static_cast<int64_t>(std::ceil(static_cast<double>(target) * static_cast<double>(n) / static_cast<double>(orig)));
  std::vector<float> y(static_cast<size_t>(out_len));
  for (int64_t i = 0; i < blocks; ++i)
    for (int64_t j = 0; j < target; ++j) {
      const int64_t o = i * target + j;
      if (o >= out_len) break;
      const double* k = &kernel[static_cast<size_t>(j * taps)];
      const int64_t start = i * orig - width;  // index into x of tap 0
      const int64_t m0 = std::max<int64_t>(0, -start), m1 = std::min<int64_t>(taps, n - start);
      const float* xs = x.data() + (start + m0);
      const double* ks = k + m0;
      const int64_t count = m1 - m0;
      // Four independent sums: the compiler can keep them in vector lanes (a single running sum is a chain).
      double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      int64_t m = 0;
      for (; m + 4 <= count; m += 4) {
        a0 += ks[m] * xs[m];
        a1 += ks[m + 1] * xs[m + 1];
        a2 += ks[m + 2] * xs[m + 2];
        a3 += ks[m + 3] * xs[m + 3];
      }
      for (; m < count; ++m) a0 += ks[m] * xs[m];
      y[static_cast<size_t>(o)] = static_cast<float>((a0 + a1) + (a2 + a3));
    }
  return y;
}

double mean_power(const std::vector<float>& x) {
  if (x.empty()) return 0;
  double s = 0;
  for (float v : x) s += static_cast<double>(v) * v;
  return s / static_cast<double>(x.size());
}

std::vector<float> normalize_loudness(const std::vector<float>& x, double target_dbfs, double peak) {
  const double rms = std::sqrt(mean_power(x));
  if (rms <= 0) return x;
  double gain = std::pow(10.0, target_dbfs / 20.0) / rms;
  float max_abs = 0;
  for (float v : x) max_abs = std::max(max_abs, std::fabs(v));
  gain = std::min(gain, peak / static_cast<double>(max_abs));
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(x[i] * gain);
  return y;
}

std::vector<float> trim_silence(const std::vector<float>& x, int64_t rate, double threshold_db, double frame_ms, double margin_ms) {
  const auto frame = std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(rate) * frame_ms / 1000)));
  const auto n = static_cast<int64_t>(x.size());
  const int64_t frames = (n + frame - 1) / frame;
  std::vector<double> power(static_cast<size_t>(frames), 0.0);
  double loudest = 0;
  for (int64_t f = 0; f < frames; ++f) {
    const int64_t a = f * frame, b = std::min(n, a + frame);
    double s = 0;
    for (int64_t i = a; i < b; ++i) s += static_cast<double>(x[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
    power[static_cast<size_t>(f)] = s / static_cast<double>(b - a);
    loudest = std::max(loudest, power[static_cast<size_t>(f)]);
  }
  if (loudest <= 0) return {};
  const double floor = loudest * std::pow(10.0, -threshold_db / 10.0);
  int64_t first = 0, last = frames - 1;
  while (first < frames && power[static_cast<size_t>(first)] <= floor) ++first;
  while (last > first && power[static_cast<size_t>(last)] <= floor) --last;
  const auto margin = static_cast<int64_t>(std::llround(static_cast<double>(rate) * margin_ms / 1000));
  const int64_t a = std::max<int64_t>(0, first * frame - margin), b = std::min(n, (last + 1) * frame + margin);
  return std::vector<float>(x.begin() + a, x.begin() + b);
}

std::vector<float> mix_at_snr(const std::vector<float>& speech, const std::vector<float>& noise, double snr_db) {
  const double ps = mean_power(speech);
  if (noise.empty()) return speech;
  std::vector<float> n(speech.size());
  for (size_t i = 0; i < n.size(); ++i) n[i] = noise[i % noise.size()];
  const double pn = mean_power(n);
  if (pn <= 0) return speech;
  const double scale = std::sqrt(ps / (pn * std::pow(10.0, snr_db / 10.0)));
  std::vector<float> y(speech.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<float>(speech[i] + scale * n[i]);
  return y;
}

}  // namespace dsforge::audio
