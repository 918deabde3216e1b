// Data-pipeline benchmark: `prepare` (ingest, NFKC cleaning, filters, exact + MinHash near dedup,
// split, statistics) on the WordNet glosses and on four times as much input, printing MB/s and peak
// RSS of each; the reference is the same stage without near-dedup, measured in the same run.
//
//   ./build/bench_data
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "bench_util.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/corpus.h"

using namespace dsforge;
using namespace dsforge::bench;

int main() {
  if (!file_exists("/usr/share/wordnet/data.noun")) {
    std::printf("bench_data: wordnet-base not installed; skipping\n");
    return 0;
  }
  set_log_quiet(true);
  const std::string tmp = (std::filesystem::temp_directory_path() / ("dsforge-bench-data-" + std::to_string(getpid()))).string();
  make_dirs(tmp);
  // x1: the glosses; x4: four variants of each gloss (distinct text, so dedup does not shrink the work).
  std::string x1, x4;
  for (const auto& d : data::read_wordnet_glosses("/usr/share/wordnet")) {
    x1 += d + "\n";
    for (const char* v : {"", " (variant b)", " (variant c)", " (variant d)"}) x4 += d + v + "\n";
  }
  write_file_atomic(tmp + "/x1.txt", x1);
  write_file_atomic(tmp + "/x4.txt", x4);
  std::printf("bench_data: prepare stage, 2 threads available, single-threaded stage\n\n");
  std::printf("%-28s %10s %10s %12s %14s %12s\n", "input", "MB", "seconds", "MB/s", "peak RSS MB", "kept docs");
  for (bool near : {false, true})
    for (const char* name : {"x1", "x4"}) {
      RunConfig cfg;
      cfg.run.out_dir = tmp + "/run-" + name + (near ? "-near" : "");
      cfg.data.source = "files";
      cfg.data.paths = {tmp + "/" + name + ".txt"};
      cfg.data.near_dedup = near;
      const double mb = static_cast<double>(std::filesystem::file_size(cfg.data.paths[0])) / 1e6;
      reset_peak_rss();
      data::PreparedCorpus p;
      const double s = seconds([&]() { p = data::prepare_corpus(cfg); });
      std::printf("%-28s %10.2f %10.2f %12.2f %14.1f %12lld\n",
                  (std::string(name) + (near ? " exact+near dedup" : " exact dedup (reference)")).c_str(), mb, s, mb / s,
                  peak_rss_mb(), static_cast<long long>(p.counts.kept));
    }
  remove_all(tmp);
  return 0;
}
