// bench_audio_models: the audio classifiers against the same architectures in PyTorch eager (Debian's
// python3-torch, bench/audio_models_ref.py), on the same threads.
//
// Training: clips per second of full training steps (features, forward, cross-entropy, backward, clipping,
// AdamW) in batches of 32: dsforge through `dsforge audio train` (the one training loop, reading its
// metrics.jsonl; the loader computes each clip's MFCC or log-mel, augmentation off), PyTorch on a fixed
// random feature batch (no feature extraction: an advantage to the reference). Inference: clips per
// second in batches of 64 (`dsforge audio eval`, features included / torch.no_grad on features). Peak RSS
// of each beside its time.
//
// The data: 320 one-second clips of 8 tone "words" by 8 speakers at 16 kHz, written and prepared here.
//
//   bench_audio_models [--threads 2] [--steps 60] [--archs lstm,gru,cnn]
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "dsforge/audio/audio_io.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"

namespace fs = std::filesystem;
using dsforge::fmt;

namespace {

using dsforge::bench::Child;
using dsforge::bench::last_metric;
Child run(const std::string& cmd, const std::string& out_file) { return dsforge::bench::run_child(cmd, out_file); }

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, steps = 60;
  std::string archs = "lstm,gru,cnn";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--steps") steps = std::atoi(argv[i + 1]);
    else if (k == "--archs") archs = argv[i + 1];
  }
  const bool have_torch = std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") == 0;
  const std::string work = (fs::temp_directory_path() / fmt("bench_audio_models_", getpid())).string();
  const std::string cli = DSFORGE_CLI, in = work + "/words", data = work + "/prepared";
  for (int c = 0; c < 8; ++c) {
    fs::create_directories(fmt(in, "/w", c));
    for (int s = 0; s < 8; ++s)
      for (int take = 0; take < 5; ++take) {
        std::vector<float> x(16000);
        for (size_t i = 0; i < x.size(); ++i)
          x[i] = static_cast<float>(0.3 * std::sin(2 * M_PI * (200.0 + 90 * c + 7 * s + take) * static_cast<double>(i) / 16000) +
                                    0.2 * std::sin(2 * M_PI * (1200.0 - 60 * c) * static_cast<double>(i) / 16000));
        dsforge::audio::write_wav(fmt(in, "/w", c, "/spk", s, "_", take, ".wav"), x, 16000);
      }
  }
  if (run(fmt(cli, " audio prepare -i ", in, " -o ", data, " --no-trim --test-speakers spk7 --val-speakers spk6"), work + "/prep.txt").code != 0) {
    std::fprintf(stderr, "bench_audio_models: audio prepare failed: %s\n", dsforge::read_file(work + "/prep.txt.err").c_str());
    return 1;
  }
  std::printf("bench_audio_models: 1 s clips at 16 kHz (MFCC 20 x 101 / log-mel 40 x 101), batch 32, %d threads, %d training steps\n",
              threads, steps);
  std::printf("%-6s %12s %12s %7s %12s %12s %7s %9s %9s %9s\n", "arch", "train clip/s", "torch clip/s", "ratio", "infer clip/s",
              "torch clip/s", "ratio", "train MB", "torch MB", "infer MB");
  std::stringstream ss(archs);
  std::string arch;
  while (std::getline(ss, arch, ',')) {
    const std::string out = work + "/" + arch;
    // 240 training clips / 32 = 8 steps an epoch.
    const Child ours = run(fmt(cli, " audio train --data ", data, " --arch ", arch, " --out ", out, " --epochs ", steps / 8 + 1,
                               " --run.threads=", threads, " --train.max_steps=", steps, " --train.log_every=", steps / 2,
                               " --train.eval_every=", steps),
                           work + "/" + arch + ".txt");
    if (ours.code != 0) {
      std::fprintf(stderr, "bench_audio_models: dsforge audio train failed: %s\n", dsforge::read_file(work + "/" + arch + ".txt.err").c_str());
      return 1;
    }
    const double train_cps = last_metric(out + "/metrics.jsonl", "tokens_per_sec");  // one clip = one row
    const Child ev = run(fmt(cli, " audio eval --model ", out, "/model --data ", data, " --split train --run.threads=", threads),
                         work + "/ev.txt");
    double infer_cps = 0;
    std::sscanf(ev.out.c_str() + std::min(ev.out.size(), ev.out.find("; ") + 2), "%lf", &infer_cps);
    double t_train = 0, t_infer = 0, t_mb = 0;
    if (have_torch) {
      const int rows = arch == "cnn" ? 40 : 20;
      const Child ref = run(fmt("/usr/bin/python3 ", DSFORGE_SOURCE_DIR, "/bench/audio_models_ref.py ", arch, " ", rows, " 101 8 32 ",
                                std::max(10, steps / 2), " ", threads),
                            work + "/ref.txt");
      const auto j = nlohmann::json::parse(ref.out, nullptr, false);
      if (ref.code == 0 && j.is_object()) {
        t_train = j["train_clips_per_s"].get<double>();
        t_infer = j["infer_clips_per_s"].get<double>();
        t_mb = j["train_peak_rss_mb"].get<double>();
      }
    }
    std::printf("%-6s %12.0f %12.0f %6.2fx %12.0f %12.0f %6.2fx %9.0f %9.0f %9.0f\n", arch.c_str(), train_cps, t_train,
                t_train > 0 ? train_cps / t_train : 0.0, infer_cps, t_infer, t_infer > 0 ? infer_cps / t_infer : 0.0, ours.peak_mb, t_mb,
                ev.peak_mb);
  }
  if (!have_torch) std::printf("bench_audio_models: /usr/bin/python3 with torch not installed; dsforge only\n");
  fs::remove_all(work);
  return 0;
}
