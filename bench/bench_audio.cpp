// MFCC extraction speed against torchaudio 0.13 in one run: N clips (1 s chirps with noise, written as
// 16-bit WAV at 22,050 Hz and resampled to 16 kHz, as `audio prepare` does) decoded and turned into
// MFCCs (torchaudio's defaults: n_fft 400, hop 200, 128 mels, 40 coefficients, top_db 80) by dsforge
// (libsndfile + our resampler + FFTW, clips in parallel) and by tests/reference/audio_ref.py
// (torchaudio.load, functional.resample, transforms.MFCC, torch threads = T). Peak RSS of each. The
// checksums (sum of all coefficients) agree to float rounding when both compute the same thing.
//
//   bench_audio [--clips 400] [--threads 2] [--rate 22050]
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "dsforge/audio/audio_io.h"
#include "dsforge/audio/dsp.h"
#include "dsforge/audio/features.h"
#include "dsforge/core/io.h"

using namespace dsforge;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  int clips = 400, threads = 2;
  int64_t rate = 22050;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--clips") clips = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--rate") rate = std::atoll(argv[i + 1]);
  }
  if (std::system("/usr/bin/python3 -c 'import torchaudio' >/dev/null 2>&1") != 0) {
    std::printf("bench_audio: skipped (/usr/bin/python3 with torchaudio, Debian python3-torchaudio, not installed)\n");
    return 0;
  }
  const fs::path dir = fs::temp_directory_path() / "dsforge-audio-bench";
  fs::create_directories(dir);
  std::vector<std::string> files;
  std::mt19937 rng(1);
  std::normal_distribution<double> noise(0.0, 0.02);
  for (int c = 0; c < clips; ++c) {
    const std::string f = (dir / ("clip" + std::to_string(c) + ".wav")).string();
    files.push_back(f);
    if (fs::exists(f)) continue;
    std::vector<float> x(static_cast<size_t>(rate));
    const double f0 = 80 + 5 * c;
    for (size_t i = 0; i < x.size(); ++i) {
      const double t = static_cast<double>(i) / static_cast<double>(rate);
      x[i] = static_cast<float>(0.4 * std::sin(2 * M_PI * (f0 * t + 1000 * t * t)) + noise(rng));
    }
    audio::write_wav(f, x, rate);
  }
  std::string list;
  for (const auto& f : files) list += f + "\n";
  write_file_atomic((dir / "list.txt").string(), list);
  write_file_atomic((dir / "params.json").string(),
                    "{\"sample_rate\": 16000, \"n_fft\": 400, \"win_length\": 0, \"hop_length\": 0, \"n_mels\": 128, "
                    "\"n_mfcc\": 40, \"f_min\": 0, \"f_max\": 0, \"top_db\": 80, \"mel_scale\": \"htk\", \"mel_norm\": \"\", "
                    "\"resample_to\": 16000, \"threads\": " + std::to_string(threads) + "}");

  // dsforge: clips spread over the threads, each decoded, resampled and turned into MFCCs.
  bench::reset_peak_rss();
  const audio::FeatureExtractor fx(audio::FeatureOptions{});
  std::vector<double> sums(files.size());
  const double ours = bench::seconds([&]() {
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&]() {
        for (size_t i; (i = next++) < files.size();) {
          const audio::Clip c = audio::read_audio(files[i]);
          const audio::Features m = fx.mfcc(audio::resample(c.samples, c.rate, 16000));
          double s = 0;
          for (float v : m.data) s += v;
          sums[i] = s;
        }
      });
    for (auto& t : pool) t.join();
  });
  const double our_rss = bench::peak_rss_mb();
  double our_sum = 0;
  for (double s : sums) our_sum += s;

  const std::string cmd = "/usr/bin/python3 " + std::string(DSFORGE_SOURCE_DIR) + "/tests/reference/audio_ref.py bench " +
                          (dir / "params.json").string() + " " + (dir / "list.txt").string();
  const bench::Child ref = bench::run_child(cmd, (dir / "ref.txt").string());
  if (ref.code != 0) {
    std::printf("bench_audio: torchaudio reference failed (%s.err)\n", (dir / "ref.txt").c_str());
    return 1;
  }
  std::istringstream in(ref.out);
  double ref_seconds = 0, ref_rss_kib = 0, ref_sum = 0;
  in >> ref_seconds >> ref_rss_kib >> ref_sum;
  std::printf("bench_audio: %d clips of 1 s at %lld Hz -> 16 kHz MFCC (40 x 81), %d threads\n", clips,
              static_cast<long long>(rate), threads);
  std::printf("  dsforge     %8.3f s  %7.1f clips/s  peak RSS %7.1f MB  checksum %.6g\n", ours, clips / ours, our_rss, our_sum);
  std::printf("  torchaudio  %8.3f s  %7.1f clips/s  peak RSS %7.1f MB  checksum %.6g\n", ref_seconds, clips / ref_seconds,
              ref.peak_mb, ref_sum);
  std::printf("  speed ratio (torchaudio time / dsforge time) %.2fx; checksum relative difference %.2e\n", ref_seconds / ours,
              std::fabs(our_sum - ref_sum) / std::fabs(ref_sum));
  return 0;
}
