// bench_image: the image classifiers against the same architectures in PyTorch eager (Debian's
// python3-torch, tests/reference/vision_ref.py), one thread each unless --threads says otherwise.
//
// Training: images per second of full training steps (forward, cross-entropy, backward, clipping, AdamW)
// on MNIST-sized batches of 64: dsforge through `dsforge image train` (the one training loop, reading
// its metrics.jsonl; data normalisation included, augmentation off), PyTorch on a fixed random batch.
// Inference: images per second in batches of 64 (`dsforge image eval` / torch.no_grad). Peak RSS of
// each phase beside its time: dsforge's training and inference are two processes; PyTorch's training peak
// is read before its inference starts.
//
//   bench_image [--threads 1] [--steps 200] [--archs cnn,mobilenet,vit]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "bench_util.h"

namespace fs = std::filesystem;
using dsforge::fmt;

namespace {

using dsforge::bench::Child;
using dsforge::bench::last_metric;
Child run(const std::string& cmd, const std::string& out_file) { return dsforge::bench::run_child(cmd, out_file); }

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, steps = 200;
  std::string archs = "cnn,mobilenet,vit";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--steps") steps = std::atoi(argv[i + 1]);
    else if (k == "--archs") archs = argv[i + 1];
  }
  const std::string mnist = std::string(DSFORGE_SOURCE_DIR) + "/../shared/data/mnist";
  if (!fs::exists(mnist)) {
    std::printf("bench_image: %s absent; nothing to measure\n", mnist.c_str());
    return 0;
  }
  const bool have_torch = std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") == 0;
  const std::string work = (fs::temp_directory_path() / fmt("bench_image_", getpid())).string();
  fs::create_directories(work);
  const std::string cli = DSFORGE_CLI, data = work + "/mnist";
  if (run(fmt(cli, " image prepare ", mnist, " --out ", data), work + "/prep.txt").code != 0) {
    std::fprintf(stderr, "bench_image: image prepare failed\n");
    return 1;
  }
  std::printf("bench_image: MNIST 28x28, batch 64, %d threads, %d training steps\n", threads, steps);
  std::printf("%-10s %11s %11s %7s %11s %11s %7s %9s %9s %9s %9s\n", "arch", "train im/s", "torch im/s", "ratio", "infer im/s",
              "torch im/s", "ratio", "train MB", "torch MB", "infer MB", "torch MB");
  std::stringstream ss(archs);
  std::string arch;
  while (std::getline(ss, arch, ',')) {
    const std::string out = work + "/" + arch;
    // 7999 training images / 64 = 125 steps an epoch: enough epochs for `steps`, stopped by max_steps.
    const Child ours = run(fmt(cli, " image train --data ", data, " --arch ", arch, " --out ", out, " --epochs ", steps / 125 + 1,
                               " --run.threads=", threads, " --train.max_steps=", steps, " --train.log_every=", steps / 2),
                           work + "/" + arch + ".txt");
    if (ours.code != 0) {
      std::fprintf(stderr, "bench_image: dsforge image train failed: %s\n", dsforge::read_file(work + "/" + arch + ".txt.err").c_str());
      return 1;
    }
    const double train_ips = last_metric(out + "/metrics.jsonl", "tokens_per_sec");  // one image = one row
    const Child ev = run(fmt(cli, " image eval --model ", out, "/model --data ", data, " --run.threads=", threads), work + "/ev.txt");
    double infer_ips = 0;
    std::sscanf(ev.out.c_str() + std::min(ev.out.size(), ev.out.find("; ") + 2), "%lf", &infer_ips);
    double t_train = 0, t_infer = 0, t_train_mb = 0, t_mb = 0;
    if (have_torch) {
      const Child ref = run(fmt("/usr/bin/python3 ", DSFORGE_SOURCE_DIR, "/tests/reference/vision_ref.py bench ", arch, " 1 28 28 10 64 ",
                                std::max(20, steps / 4), " ", threads),
                            work + "/ref.txt");
      const auto j = nlohmann::json::parse(ref.out, nullptr, false);
      if (ref.code == 0 && j.is_object()) {
        t_train = j["train_images_per_s"].get<double>();
        t_infer = j["infer_images_per_s"].get<double>();
        t_train_mb = j["train_peak_rss_mb"].get<double>();  // the peak before inference started
        t_mb = ref.peak_mb;
      }
    }
    std::printf("%-10s %11.0f %11.0f %6.2fx %11.0f %11.0f %6.2fx %9.0f %9.0f %9.0f %9.0f\n", arch.c_str(), train_ips, t_train,
                t_train > 0 ? train_ips / t_train : 0.0, infer_ips, t_infer, t_infer > 0 ? infer_ips / t_infer : 0.0, ours.peak_mb,
                t_train_mb, ev.peak_mb, t_mb);
  }
  if (!have_torch) std::printf("bench_image: /usr/bin/python3 with torch not installed; dsforge only\n");
  fs::remove_all(work);
  return 0;
}
