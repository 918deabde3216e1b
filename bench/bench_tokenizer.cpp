// Tokenizer benchmark: dsforge's byte-level BPE against Debian's sentencepiece (spm_train
// --model_type=bpe, spm_encode) on the same corpus and vocabulary size, in one run. Prints training
// time, encoding throughput (all cores), bytes per token and peak RSS for both, and the ratios.
//
//   ./build/bench_tokenizer [--corpus FILE] [--vocab 8000] [--threads N]
// Default corpus: TinyStories + WikiText-2 from ../shared/data when present, else WordNet glosses.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "dsforge/core/io.h"
#include "dsforge/data/corpus.h"
#include "dsforge/tokenizer/bpe.h"

using namespace dsforge;
using namespace dsforge::bench;

namespace {

struct ChildResult {
  double seconds;
  double peak_mb;
  int status;
};

// Runs argv with stdin/stdout redirected, measuring wall time and the child's peak RSS.
ChildResult run_child(const std::vector<std::string>& argv, const std::string& in, const std::string& out) {
  std::fflush(nullptr);  // or the child inherits and re-prints our buffered output
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    if (!in.empty()) freopen(in.c_str(), "r", stdin);
    freopen(out.empty() ? "/dev/null" : out.c_str(), "w", stdout);
    freopen((out.empty() ? std::string("/dev/null") : out + ".err").c_str(), "w", stderr);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {s, ru.ru_maxrss / 1024.0, status};
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string corpus;
  int64_t vocab = 8000;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--corpus")) corpus = argv[i + 1];
    if (!std::strcmp(argv[i], "--vocab")) vocab = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
  }
  if (std::system("command -v spm_train >/dev/null 2>&1") != 0) {
    std::printf("bench_tokenizer: spm_train not found (apt-get install sentencepiece); skipping\n");
    return 0;
  }
  const std::string tmp = (std::filesystem::temp_directory_path() / ("dsforge-bench-tok-" + std::to_string(getpid()))).string();
  make_dirs(tmp);
  if (corpus.empty()) {
    corpus = path_join(tmp, "corpus.txt");
    std::string text;
    const std::string shared = std::string(DSFORGE_SOURCE_DIR) + "/../shared/data";
    for (const char* f : {"/tinystories/train_first1000.txt", "/tinystories/validation_slice.txt", "/wikitext2/valid.txt",
                          "/wikitext2/test.txt"})
      if (file_exists(shared + f)) text += read_file(shared + f);
    if (text.empty())
      for (const auto& d : data::read_wordnet_glosses("/usr/share/wordnet")) text += d + "\n";
    write_file_atomic(corpus, text);
  }
  std::vector<std::string> lines = read_lines(corpus);
  double bytes = 0;
  for (const auto& l : lines) bytes += static_cast<double>(l.size());
  std::printf("bench_tokenizer: %s, %zu lines, %.2f MB, vocab %lld, %d threads\n\n", corpus.c_str(), lines.size(),
              bytes / 1e6, static_cast<long long>(vocab), threads);

  // dsforge: train, then encode on all cores.
  reset_peak_rss();
  tok::BpeTokenizer t;
  const double ds_train = seconds([&]() { t = tok::BpeTokenizer::train(lines, {vocab, {"<|endoftext|>"}}); });
  const double ds_train_rss = peak_rss_mb();
  std::vector<std::vector<int32_t>> ids;
  reset_peak_rss();
  tok::BpeTokenizer fresh = t;  // cold cache, as spm_encode starts cold
  const double ds_encode = seconds([&]() { ids = fresh.encode_batch(lines, false, threads); });
  const double ds_encode_rss = peak_rss_mb();
  double ds_tokens = 0;
  for (const auto& v : ids) ds_tokens += static_cast<double>(v.size());

  // sentencepiece, BPE, same vocabulary, byte fallback so that it covers every input like byte-level BPE.
  const std::string prefix = path_join(tmp, "spm");
  ChildResult spm_train = run_child({"spm_train", "--input=" + corpus, "--model_prefix=" + prefix, "--model_type=bpe",
                                     "--vocab_size=" + std::to_string(vocab), "--character_coverage=1.0",
                                     "--byte_fallback=true", "--num_threads=" + std::to_string(threads),
                                     "--max_sentence_length=100000", "--minloglevel=2"},
                                    "", path_join(tmp, "spm_train.log"));
  if (spm_train.status != 0) {
    std::string err = read_file(path_join(tmp, "spm_train.log.err"));
    std::printf("spm_train failed (status %d): %s\n", spm_train.status, err.substr(err.size() > 400 ? err.size() - 400 : 0).c_str());
    return 1;
  }
  const std::string encoded = path_join(tmp, "spm_ids.txt");
  ChildResult spm_encode = run_child({"spm_encode", "--model=" + prefix + ".model", "--output_format=id"}, corpus, encoded);
  double spm_tokens = 0;
  {
    std::ifstream in(encoded);
    std::string w;
    while (in >> w) spm_tokens += 1;
  }

  std::printf("%-12s %12s %16s %14s %16s %16s\n", "", "train s", "encode MB/s", "bytes/token", "train peak MB",
              "encode peak MB");
  std::printf("%-12s %12.2f %16.2f %14.3f %16.1f %16.1f\n", "dsforge", ds_train, bytes / 1e6 / ds_encode,
              bytes / ds_tokens, ds_train_rss, ds_encode_rss);
  std::printf("%-12s %12.2f %16.2f %14.3f %16.1f %16.1f\n", "sentencepiece", spm_train.seconds,
              bytes / 1e6 / spm_encode.seconds, bytes / spm_tokens, spm_train.peak_mb, spm_encode.peak_mb);
  std::printf("\nratios: training %.2fx faster (target >= 3x), encoding %.2fx faster (target >= 2x), "
              "bytes/token %.2f%% of sentencepiece's (target >= 98%%)\n",
              spm_train.seconds / ds_train, (bytes / ds_encode) / (bytes / spm_encode.seconds),
              100.0 * (bytes / ds_tokens) / (bytes / spm_tokens));
  // Streaming: the CLI's encoder memory must not grow with the input (corpus x1 vs x4).
  const std::string cli = (std::filesystem::path(argv[0]).parent_path() / "dsforge").string();
  if (file_exists(cli)) {
    const std::string tok_json = path_join(tmp, "tok.json"), big = path_join(tmp, "corpus_x4.txt");
    t.save(tok_json);
    const std::string text = read_file(corpus);
    write_file_atomic(big, text + text + text + text);
    ChildResult x1 = run_child({cli, "tokenizer", "encode", "--tokenizer", tok_json}, corpus, path_join(tmp, "ids1"));
    ChildResult x4 = run_child({cli, "tokenizer", "encode", "--tokenizer", tok_json}, big, path_join(tmp, "ids4"));
    std::printf("streaming encode (dsforge tokenizer encode): corpus x1 %.1f MB peak RSS, x4 %.1f MB (x%.2f for 4x the input)\n",
                x1.peak_mb, x4.peak_mb, x4.peak_mb / x1.peak_mb);
  }
  remove_all(tmp);
  return 0;
}
