// bench_robust: dsforge's PGD attack against the same attack written in PyTorch eager
// (tests/reference/robust_ref.py) on the same MNIST CNN and images, one thread each unless --threads.
//
// A CNN is trained briefly on MNIST (`dsforge image train`, one epoch), then both attack the first
// --images validation images with PGD L-infinity eps 0.1, 20 steps, batch 128: images per second, peak
// RSS of each process, and each side's robust accuracy (their random starts differ, so the accuracies
// agree to within sampling noise, not exactly: a check that both run the same attack).
//
//   bench_robust [--threads 1] [--images 1000]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "bench_util.h"
#include "dsforge/core/error.h"

namespace fs = std::filesystem;
using dsforge::fmt;
using dsforge::bench::run_child;

int main(int argc, char** argv) {
  int threads = 1, images = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--images") images = std::atoi(argv[i + 1]);
  }
  const std::string mnist = std::string(DSFORGE_SOURCE_DIR) + "/../shared/data/mnist";
  if (!fs::exists(mnist)) {
    std::printf("bench_robust: %s absent; nothing to measure\n", mnist.c_str());
    return 0;
  }
  const std::string work = (fs::temp_directory_path() / fmt("bench_robust_", getpid())).string();
  fs::create_directories(work);
  const std::string cli = DSFORGE_CLI, data = work + "/mnist", model = work + "/cnn/model";
  if (run_child(fmt(cli, " image prepare ", mnist, " --out ", data), work + "/prep.txt").code != 0 ||
      run_child(fmt(cli, " image train --data ", data, " --out ", work, "/cnn --epochs 1 --run.threads=", threads), work + "/train.txt").code != 0) {
    std::fprintf(stderr, "bench_robust: preparing the model failed (see %s)\n", work.c_str());
    return 1;
  }
  std::printf("bench_robust: MNIST CNN, PGD linf eps 0.1, 20 steps, batch 128, %d images, %d threads\n", images, threads);
  std::printf("%-10s %10s %9s %11s\n", "", "images/s", "peak MB", "robust acc");
  const auto ours = run_child(fmt(cli, " robust attack --model ", model, " --data ", data, " --split val --attack pgd --eps 0.1 --steps 20 --examples ",
                                  images, " --json --run.threads=", threads),
                              work + "/ours.txt");
  if (ours.code != 0) {
    std::fprintf(stderr, "bench_robust: dsforge robust attack failed: %s\n", ours.out.c_str());
    return 1;
  }
  const auto j = nlohmann::json::parse(ours.out.substr(ours.out.find('{')));
  const double ours_ips = static_cast<double>(images) / j["seconds"].get<double>();
  std::printf("%-10s %10.1f %9.0f %10.2f%%\n", "dsforge", ours_ips, ours.peak_mb, 100 * j["robust_accuracy"].get<double>());
  if (std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") != 0) {
    std::printf("bench_robust: /usr/bin/python3 with torch not installed; dsforge only\n");
    return 0;
  }
  const auto ref = run_child(fmt("/usr/bin/python3 ", DSFORGE_SOURCE_DIR, "/tests/reference/robust_ref.py pgd ", model, " ", data,
                                 "/val-00000.safetensors ", images, " 0.1 20 128 ", threads),
                             work + "/ref.txt");
  const auto r = nlohmann::json::parse(ref.out, nullptr, false);
  if (ref.code != 0 || !r.is_object()) {
    std::fprintf(stderr, "bench_robust: the PyTorch reference failed\n");
    return 1;
  }
  std::printf("%-10s %10.1f %9.0f %10.2f%%\n", "pytorch", r["images_per_s"].get<double>(), ref.peak_mb, 100 * r["robust_accuracy"].get<double>());
  std::printf("speed ratio dsforge / pytorch: %.2fx; peak RSS ratio %.2f\n", ours_ips / r["images_per_s"].get<double>(), ours.peak_mb / ref.peak_mb);
  fs::remove_all(work);
  return 0;
}
