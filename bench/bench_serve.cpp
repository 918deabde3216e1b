// Decode and serving benchmark, one run:
//  1. single-sequence decode tokens/s (batch 1, f32, greedy, 16-token prompt, 128 new tokens) of
//     dsforge against llama.cpp (node-llama-cpp's prebuilt binaries) on the same model exported as f32
//     GGUF, for nano, micro and mini, same thread count, peak RSS of each;
//  2. `dsforge serve` on micro with 1, 4 and 16 concurrent streaming clients (32 requests of 64 tokens at
//     each level): aggregate tokens/s, time to first token and inter-token latency p50/p99, and the
//     p99 of the time from the last token to the end of the response.
//
//   ./build/bench_serve [--threads N] [--skip-llama] [--skip-decode] [--levels 1,4,16] [--requests 128]
// (--levels: the concurrent streams of each serving run; the ratio column is against the first level.)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench_models.h"
#include "bench_util.h"
#include "dsforge/core/io.h"
#include "dsforge/deploy/export.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/serve/server.h"
#include "dsforge/tokenizer/bpe.h"

using namespace dsforge;
using namespace dsforge::bench;
using Clock = std::chrono::steady_clock;

namespace {

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

// One streaming completion over a raw socket: the arrival time of every event.
struct StreamTiming {
  double ttft = 0;
  double tail = 0;  // from the last text event to the end of the response
  std::vector<double> gaps;
  int tokens = 0;
};
StreamTiming stream_once(int port, int max_tokens, uint64_t seed) {
  const std::string body = "{\"model\":\"bench\",\"prompt\":\"Once upon a time there was a little\",\"max_tokens\":" +
                           std::to_string(max_tokens) + ",\"temperature\":0.8,\"seed\":" + std::to_string(seed) + ",\"stream\":true,\"ignore_eos\":true}";
  const std::string raw = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  StreamTiming t;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return t;
  }
  const auto t0 = Clock::now();
  ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
  char buf[16384];
  auto last = t0;
  bool first = true;
  std::string all;
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    const auto now = Clock::now();
    std::string chunk(buf, static_cast<size_t>(n));
    all += chunk;
    size_t events = 0, at = 0;
    while ((at = chunk.find("\"text\":\"", at)) != std::string::npos) {
      if (chunk.compare(at + 8, 1, "\"") != 0) ++events;  // a non-empty text delta
      at += 8;
    }
    if (events == 0) continue;
    const double dt = std::chrono::duration<double>(now - (first ? t0 : last)).count();
    if (first) t.ttft = dt;
    else t.gaps.push_back(dt / static_cast<double>(events));
    first = false;
    last = now;
  }
  t.tail = std::chrono::duration<double>(Clock::now() - last).count();
  ::close(fd);
  const size_t u = all.rfind("\"completion_tokens\":");
  if (u != std::string::npos) t.tokens = std::atoi(all.c_str() + u + 20);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::min<unsigned>(std::thread::hardware_concurrency(), 2));
  bool skip_llama = false, skip_decode = false;
  int requests = 128;                 // per level, shared among its clients
  std::vector<int> levels{1, 4, 16};  // concurrent streams
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--skip-llama")) skip_llama = true;
    if (!std::strcmp(argv[i], "--skip-decode")) skip_decode = true;
    if (!std::strcmp(argv[i], "--requests") && i + 1 < argc) requests = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--levels") && i + 1 < argc) {
      levels.clear();
      std::stringstream list(argv[++i]);
      for (std::string level; std::getline(list, level, ',');) levels.push_back(std::atoi(level.c_str()));
    }
  }
  at::set_num_threads(threads);
  const std::string dir = (std::filesystem::temp_directory_path() / ("dsforge-bench-serve-" + std::to_string(::getpid()))).string();
  make_dirs(dir);
  const bool llama = !skip_llama && llama_available();
  std::printf("== decode, batch 1, f32, 16-token prompt, 128 new tokens, %d thread(s)%s\n", threads,
              llama ? "" : " (llama.cpp not installed: dsforge only)");
  std::printf("| model | dsforge tok/s | peak RSS MB | llama.cpp tok/s | peak RSS MB | dsforge / llama.cpp |\n|---|---:|---:|---:|---:|---:|\n");
  std::string micro_dir;
  for (const char* preset : {"nano", "micro", "mini"}) {
    if (skip_decode && std::string(preset) != "micro") continue;
    const std::string md = make_random_model(dir, preset);
    if (std::string(preset) == "micro") micro_dir = md;
    if (skip_decode) continue;
    model::CausalLm m = model::load_pretrained(md);
    std::vector<int64_t> prompt;
    for (int i = 0; i < 16; ++i) prompt.push_back(1 + i * 7 % (m->config().vocab_size - 1));
    model::SampleOptions o;
    o.max_new_tokens = 8;
    model::generate(m, {prompt}, o);  // warm-up
    o.max_new_tokens = 128;
    reset_peak_rss();
    const double s = seconds([&] { model::generate(m, {prompt}, o); });
    const double ours = 128.0 / s, ours_mb = peak_rss_mb();
    double theirs = 0, theirs_mb = 0;
    if (llama) {
      deploy::export_gguf(md, md + ".gguf", deploy::GgmlType::F32);
      const LlamaDecode r = llama_decode(md + ".gguf", m->config().vocab_size, prompt, 128, threads, dir);
      if (r.ok) theirs = r.tokens_per_s, theirs_mb = r.peak_rss_mb;
      else std::printf("llama.cpp failed: %s\n", r.error.c_str());
    }
    std::printf("| %s | %.0f | %.0f | %.0f | %.0f | %.2fx |\n", preset, ours, ours_mb, theirs, theirs_mb, theirs > 0 ? ours / theirs : 0.0);
    std::fflush(stdout);
  }

  // The server on micro.
  std::atomic<int> port{0};
  std::atomic<bool> stop{false};
  serve::ServeOptions so;
  so.port = 0;
  so.model_name = "bench";
  so.engine.max_batch = 16;
  std::thread server([&] { serve::serve(micro_dir, so, [&](int p) { port = p; }, [&] { return stop.load(); }); });
  while (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stream_once(port, 8, 1);  // warm-up
  std::printf("\n== dsforge serve, micro, streaming completions of 64 tokens, max batch 16\n");
  std::printf("| streams | aggregate tok/s | vs 1 stream | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | end p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  double one = 0;
  for (int streams : levels) {
    // 128 requests at every level (each client sends 128 / streams one after the other): the same 8,192
    // tokens, so that the one-stream figure is seconds of measurement and 16 clients spend most of it
    // all running (with 2 requests each, the ramp up and down was a third of the run).
    const int per_client = std::max(requests / streams, 1);
    std::vector<StreamTiming> results(static_cast<size_t>(streams * per_client));
    const auto t0 = Clock::now();
    std::vector<std::thread> clients;
    for (int c = 0; c < streams; ++c)
      clients.emplace_back([&, c] {
        for (int k = 0; k < per_client; ++k)
          results[static_cast<size_t>(c * per_client + k)] = stream_once(port, 64, static_cast<uint64_t>(c * 100 + k));
      });
    for (auto& t : clients) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<double> ttft, itl, tail;
    int tokens = 0;
    for (const auto& r : results) {
      ttft.push_back(r.ttft * 1e3);
      tail.push_back(r.tail * 1e3);
      for (double g : r.gaps) itl.push_back(g * 1e3);
      tokens += r.tokens;
    }
    const double agg = tokens / wall;
    if (one == 0) one = agg;
    std::printf("| %d | %.0f | %.2fx | %.1f | %.1f | %.1f | %.1f | %.1f |\n", streams, agg, agg / one, percentile(ttft, 0.5), percentile(ttft, 0.99),
                percentile(itl, 0.5), percentile(itl, 0.99), percentile(tail, 0.99));
    std::fflush(stdout);
  }
  stop = true;
  server.join();
  std::printf("peak RSS of this process (dsforge models + server): %.0f MB\n", peak_rss_mb());
  remove_all(dir);
  return 0;
}
