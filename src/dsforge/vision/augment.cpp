#include "dsforge/vision/augment.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/vision/opencv_mat.h"

namespace dsforge::vision {
namespace {

// SplitMix64 with a fair coin.
struct Rng : SplitMix64 {
  using SplitMix64::SplitMix64;
  bool coin() { return (next() >> 63) != 0; }
};

constexpr double kPi = 3.14159265358979323846;

}  // namespace

bool AugmentOptions::any() const {
  return rotate > 0 || translate > 0 || scale > 0 || shear > 0 || crop < 1 || hflip || vflip || brightness > 0 || contrast > 0 ||
         cutout > 0;
}

std::string AugmentOptions::describe() const {
  std::ostringstream s;
  auto put = [&](const char* k, double v, bool on) {
    if (!on) return;
    if (s.tellp() > 0) s << ',';
    s << k << '=' << v;
  };
  put("rotate", rotate, rotate > 0);
  put("translate", translate, translate > 0);
  put("scale", scale, scale > 0);
  put("shear", shear, shear > 0);
  put("crop", crop, crop < 1);
  if (hflip) s << (s.tellp() > 0 ? "," : "") << "hflip";
  if (vflip) s << (s.tellp() > 0 ? "," : "") << "vflip";
  put("brightness", brightness, brightness > 0);
  put("contrast", contrast, contrast > 0);
  put("cutout", cutout, cutout > 0);
  if (reflect) s << (s.tellp() > 0 ? "," : "") << "reflect";
  return s.tellp() > 0 ? s.str() : "none";
}

AugmentOptions parse_augment(const std::string& spec) {
  AugmentOptions a;
  if (spec.empty() || spec == "none") return a;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    if (eq == std::string::npos) {
      if (key == "hflip") a.hflip = true;
      else if (key == "vflip") a.vflip = true;
      else if (key == "reflect") a.reflect = true;
      else throw ConfigError(fmt("augment '", item, "': expected key=value (or hflip, vflip, reflect)"));
      continue;
    }
    char* end = nullptr;
    const std::string text = item.substr(eq + 1);
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0') throw ConfigError(fmt("augment '", item, "': '", text, "' is not a number"));
    auto in = [&](double lo, double hi) {
      if (!(v >= lo && v <= hi)) throw ConfigError(fmt("augment ", key, "=", text, ": expected a value in [", lo, ", ", hi, "]"));
      return v;
    };
    if (key == "rotate") a.rotate = in(0, 180);
    else if (key == "translate") a.translate = in(0, 0.5);
    else if (key == "scale") a.scale = in(0, 0.9);
    else if (key == "shear") a.shear = in(0, 45);
    else if (key == "crop") a.crop = in(0.05, 1);
    else if (key == "brightness") a.brightness = in(0, 1);
    else if (key == "contrast") a.contrast = in(0, 1);
    else if (key == "cutout") a.cutout = in(0, 1);
    else
      throw ConfigError(fmt("augment: unknown key '", key,
                            "' (known: rotate, translate, scale, shear, crop, hflip, vflip, brightness, contrast, cutout, reflect)"));
  }
  return a;
}

uint64_t image_seed(uint64_t seed, int64_t step, int64_t row) {
  return SplitMix64(seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(step + 1)) ^
                    (0x8CB92BA72F3D8DD7ull * static_cast<uint64_t>(row + 1)))
      .next();
}

void augment_image(const uint8_t* src, int64_t c, int64_t h, int64_t w, uint8_t* dst, const AugmentOptions& a, uint64_t seed) {
  Rng rng(seed);
  cv::Mat m = chw_to_mat(src, c, h, w);
  const int H = static_cast<int>(h), W = static_cast<int>(w);
  if (a.crop < 1) {  // random resized crop (Szegedy et al. 2015): up to 10 draws, else the whole image
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double area = rng.uniform(a.crop, 1.0) * H * W;
      const double ratio = std::exp(rng.uniform(std::log(3.0 / 4.0), std::log(4.0 / 3.0)));
      const int cw = static_cast<int>(std::lround(std::sqrt(area * ratio))), ch = static_cast<int>(std::lround(std::sqrt(area / ratio)));
      if (cw < 1 || ch < 1 || cw > W || ch > H) continue;
      const int x0 = static_cast<int>(rng.uniform(0, W - cw + 1 - 1e-9)), y0 = static_cast<int>(rng.uniform(0, H - ch + 1 - 1e-9));
      cv::Mat out;
      cv::resize(m(cv::Rect(x0, y0, cw, ch)), out, cv::Size(W, H), 0, 0, cv::INTER_LINEAR);
      m = out;
      break;
    }
  }
  if (a.rotate > 0 || a.translate > 0 || a.scale > 0 || a.shear > 0) {
    const double angle = rng.uniform(-a.rotate, a.rotate) * kPi / 180.0;
    const double zoom = rng.uniform(1.0 - a.scale, 1.0 + a.scale);
    const double shear = std::tan(rng.uniform(-a.shear, a.shear) * kPi / 180.0);
    const double tx = rng.uniform(-a.translate, a.translate) * W, ty = rng.uniform(-a.translate, a.translate) * H;
    // Forward map about the centre: p' = R * S * Shear * (p - centre) + centre + t.
    const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0, co = std::cos(angle) * zoom, si = std::sin(angle) * zoom;
    const double m00 = co, m01 = co * shear - si, m10 = si, m11 = si * shear + co;
    cv::Mat M = (cv::Mat_<double>(2, 3) << m00, m01, cx + tx - m00 * cx - m01 * cy, m10, m11, cy + ty - m10 * cx - m11 * cy);
    cv::Mat out;
    cv::warpAffine(m, out, M, m.size(), cv::INTER_LINEAR, a.reflect ? cv::BORDER_REFLECT_101 : cv::BORDER_CONSTANT, cv::Scalar::all(0));
    m = out;
  }
  if (a.hflip && rng.coin()) cv::flip(m, m, 1);
  if (a.vflip && rng.coin()) cv::flip(m, m, 0);
  if (a.brightness > 0 || a.contrast > 0) {
    const double b = rng.uniform(-a.brightness, a.brightness) * 255.0, k = rng.uniform(1.0 - a.contrast, 1.0 + a.contrast);
    const cv::Scalar channel_means = cv::mean(m);
    double mean = 0;
    for (int k = 0; k < m.channels(); ++k) mean += channel_means[k] / m.channels();
    m.convertTo(m, -1, k, (1.0 - k) * mean + b);  // saturating: k (v - mean) + mean + b, clamped to 0..255
  }
  if (a.cutout > 0 && rng.coin()) {
    const int side = std::max(1, static_cast<int>(std::lround(a.cutout * std::min(H, W))));
    const int cx = static_cast<int>(rng.uniform(0, W - 1e-9)), cy = static_cast<int>(rng.uniform(0, H - 1e-9));
    const int x0 = std::max(0, cx - side / 2), y0 = std::max(0, cy - side / 2);
    const int x1 = std::min(W, cx - side / 2 + side), y1 = std::min(H, cy - side / 2 + side);
    if (x1 > x0 && y1 > y0) m(cv::Rect(x0, y0, x1 - x0, y1 - y0)).setTo(cv::Scalar::all(0));
  }
  mat_into_chw(m, dst);
}

}  // namespace dsforge::vision
