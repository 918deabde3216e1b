// Decode and serving benchmark, one run:
//  1. single-sequence decode tokens/s (batch 1, f32, greedy, 16-token prompt, 128 new tokens) of
//     dsforge against llama.cpp (node-llama-cpp's prebuilt binaries) on the same model exported as f32
//     GGUF, for nano, micro and mini, same thread count, peak RSS of each;
//  2. `dsforge serve` on micro with 1, 4 and 16 concurrent streaming clients (128 requests of 64 tokens
//     at each level, the clients driven by one thread with poll(); the levels run in turn, 3 rounds):
//     aggregate tokens/s (the rounds' median and each round's), time to first
//     token and inter-token latency p50/p99, the p99 of the time from the last token to the end of the
//     response, the mean rows per decode step, and the engine thread's time in prefill, decode steps
//     and sampling (GET /metrics).
//
//   ./build/bench_serve [--threads N] [--skip-llama] [--skip-decode] [--levels 1,4,16] [--requests 128]
//                       [--rounds 3] [--weights f32|bf16|both]
// (--levels: the concurrent streams of each serving run; the ratio column is against the first level;
// --weights: the server's decode weights, `serve --weights`; both = a table for each.)
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
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>
#include <thread>

#include "bench_models.h"
#include "bench_util.h"
#include "dsforge/core/cpu_allocator.h"
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

// A socket connected to 127.0.0.1:port, or -1.
int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return fd;
  ::close(fd);
  return -1;
}

// One streaming completion over a raw socket: the arrival time of every event.
struct StreamTiming {
  double ttft = 0;
  double tail = 0;  // from the last text event to the end of the response
  std::vector<double> gaps;
  int tokens = 0;
};

// A streaming request in flight: sent on open(), its events timed as they arrive (on_data), its
// token count read from the usage of the last event when the server closes the connection (end()).
class Stream {
 public:
  bool open(int port, int max_tokens, uint64_t seed) {
    const std::string body = "{\"model\":\"bench\",\"prompt\":\"Once upon a time there was a little\",\"max_tokens\":" +
                             std::to_string(max_tokens) + ",\"temperature\":0.8,\"seed\":" + std::to_string(seed) +
                             ",\"stream\":true,\"ignore_eos\":true}";
    const std::string raw = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    fd = connect_loopback(port);
    if (fd < 0) return false;
    t0_ = last_ = Clock::now();
    ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
    return true;
  }
  // Reads what has arrived; false once the response has ended (then the timing is complete).
  bool read() {
    char buf[16384];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      end();
      return false;
    }
    const auto now = Clock::now();
    const std::string_view chunk(buf, static_cast<size_t>(n));
    all_.append(chunk);
    size_t events = 0, at = 0;
    while ((at = chunk.find("\"text\":\"", at)) != std::string::npos) {
      if (chunk.compare(at + 8, 1, "\"") != 0) ++events;  // a non-empty text delta
      at += 8;
    }
    if (events == 0) return true;
    const double dt = std::chrono::duration<double>(now - (first_ ? t0_ : last_)).count();
    if (first_) timing.ttft = dt;
    else timing.gaps.push_back(dt / static_cast<double>(events));
    first_ = false;
    last_ = now;
    return true;
  }
  int fd = -1;
  StreamTiming timing;

 private:
  void end() {
    timing.tail = std::chrono::duration<double>(Clock::now() - last_).count();
    ::close(fd);
    fd = -1;
    const size_t u = all_.rfind("\"completion_tokens\":");
    if (u != std::string::npos) timing.tokens = std::atoi(all_.c_str() + u + 20);
  }
  Clock::time_point t0_, last_;
  bool first_ = true;
  std::string all_;
};

StreamTiming stream_once(int port, int max_tokens, uint64_t seed) {
  Stream s;
  if (s.open(port, max_tokens, seed))
    while (s.read()) {
    }
  return s.timing;
}

// `streams` clients at once, each sending `per_client` requests one after the other, all driven by
// this one thread with poll(), as a load generator does (autocannon is one event loop): the
// benchmark's own work is one thread beside the server on the same cores, not one per stream.
// Client c's request k has seed 100 c + k; the timings in that order.
std::vector<StreamTiming> run_clients(int port, int streams, int per_client, int max_tokens) {
  std::vector<StreamTiming> out(static_cast<size_t>(streams * per_client));
  std::vector<Stream> live(static_cast<size_t>(streams));
  std::vector<int> sent(static_cast<size_t>(streams), 0);
  auto next = [&](int c) {  // client c's next request, if it has one left
    while (sent[c] < per_client && !live[c].open(port, max_tokens, static_cast<uint64_t>(c * 100 + sent[c])))
      out[static_cast<size_t>(c * per_client + sent[c]++)] = {};
    if (live[c].fd >= 0) ++sent[c];
  };
  for (int c = 0; c < streams; ++c) next(c);
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<int> owner;
    for (int c = 0; c < streams; ++c)
      if (live[c].fd >= 0) {
        fds.push_back({live[c].fd, POLLIN, 0});
        owner.push_back(c);
      }
    if (fds.empty()) break;
    if (::poll(fds.data(), fds.size(), 30000) <= 0) break;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const int c = owner[i];
      if (live[c].read()) continue;
      out[static_cast<size_t>(c * per_client + sent[c] - 1)] = live[c].timing;
      live[c] = Stream();
      next(c);
    }
  }
  return out;
}

// The counters of GET /metrics (name -> value; labelled series left out).
std::map<std::string, double> metrics(int port) {
  const std::string raw = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const int fd = connect_loopback(port);
  std::string all;
  if (fd >= 0) {
    ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
    char buf[16384];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) all.append(buf, static_cast<size_t>(n));
    ::close(fd);
  }
  std::map<std::string, double> out;
  std::istringstream lines(all);
  for (std::string line; std::getline(lines, line);) {
    const size_t space = line.find(' ');
    if (line.rfind("dsforge_", 0) == 0 && space != std::string::npos && line.find('{') == std::string::npos)
      out[line.substr(0, space)] = std::atof(line.c_str() + space + 1);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::min<unsigned>(std::thread::hardware_concurrency(), 2));
  bool skip_llama = false, skip_decode = false;
  std::string weights = "f32";
  int requests = 128;                 // per level, shared among its clients
  int rounds = 3;                     // of all levels, one after the other
  std::vector<int> levels{1, 4, 16};  // concurrent streams
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--skip-llama")) skip_llama = true;
    if (!std::strcmp(argv[i], "--skip-decode")) skip_decode = true;
    if (!std::strcmp(argv[i], "--requests") && i + 1 < argc) requests = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
    if (!std::strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
    if (!std::strcmp(argv[i], "--levels") && i + 1 < argc) {
      levels.clear();
      std::stringstream list(argv[++i]);
      for (std::string level; std::getline(list, level, ',');) levels.push_back(std::atoi(level.c_str()));
    }
  }
  at::set_num_threads(threads);
  core::install_cpu_allocator();  // as the dsforge CLI does (its KV caches of 2 MB and more on huge pages)
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
    model::pack_decode_weights(m);  // as serve and generate do
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

  // The server on micro, with each form of its decode weights asked for.
  std::vector<std::string> forms = weights == "both" ? std::vector<std::string>{"f32", "bf16"} : std::vector<std::string>{weights};
  for (const std::string& w : forms) {
    std::atomic<int> port{0};
    std::atomic<bool> stop{false};
    serve::ServeOptions so;
    so.port = 0;
    so.model_name = "bench";
    so.engine.max_batch = 16;
    so.weights = w;
    std::thread server([&] { serve::serve(micro_dir, so, [&](int p) { port = p; }, [&] { return stop.load(); }); });
    while (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stream_once(port, 8, 1);  // warm-up
    std::printf("\n== dsforge serve, micro, %s weights, streaming completions of 64 tokens, max batch 16, %d round(s)\n", w.c_str(),
                rounds);
    // Each round runs every level once, in order: the levels alternate through the run, so that a
    // stretch of memory contention from other tenants of the machine falls on all of them alike (it
    // moved the one-stream figure by 2x between runs). Tokens/s: the median of the rounds; latencies:
    // over all rounds' requests; the engine's split: over all rounds.
    struct Level {
      std::vector<double> rates;
      std::vector<double> ttft, itl, tail;
      double wall = 0, tokens = 0, steps = 0, prefill = 0, decode = 0, sample = 0;
    };
    std::vector<Level> stats(levels.size());
    for (int round = 0; round < rounds; ++round)
      for (size_t li = 0; li < levels.size(); ++li) {
        const int streams = levels[li];
        // 128 requests per level by default (each client sends requests / streams one after the other):
        // the same tokens at every level, so that the one-stream figure is seconds of measurement and
        // 16 clients spend most of it all running.
        const int per_client = std::max(requests / streams, 1);
        const auto before = metrics(port);
        const auto t0 = Clock::now();
        const std::vector<StreamTiming> results = run_clients(port, streams, per_client, 64);
        const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
        auto after = metrics(port);
        auto delta = [&](const char* name) { return after[name] - before.at(name); };
        Level& L = stats[li];
        int tokens = 0;
        for (const auto& r : results) {
          L.ttft.push_back(r.ttft * 1e3);
          L.tail.push_back(r.tail * 1e3);
          for (double g : r.gaps) L.itl.push_back(g * 1e3);
          tokens += r.tokens;
        }
        L.rates.push_back(tokens / wall);
        L.wall += wall;
        L.tokens += delta("dsforge_generated_tokens_total");
        L.steps += delta("dsforge_decode_steps_total");
        L.prefill += delta("dsforge_engine_prefill_seconds_total");
        L.decode += delta("dsforge_engine_decode_seconds_total");
        L.sample += delta("dsforge_engine_sample_seconds_total");
      }
    std::printf("| streams | aggregate tok/s | vs 1 stream | rounds' tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | end p99 ms "
                "| rows per step | engine: prefill / decode / sample, %% of wall |\n|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|\n");
    const double one = percentile(stats[0].rates, 0.5);
    for (size_t li = 0; li < levels.size(); ++li) {
      const Level& L = stats[li];
      const double agg = percentile(L.rates, 0.5);
      std::string each;
      for (double r : L.rates) each += (each.empty() ? "" : " ") + std::to_string(static_cast<int>(r));
      std::printf("| %d | %.0f | %.2fx | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f / %.0f / %.0f |\n", levels[li], agg, agg / one,
                  each.c_str(), percentile(L.ttft, 0.5), percentile(L.ttft, 0.99), percentile(L.itl, 0.5), percentile(L.itl, 0.99),
                  percentile(L.tail, 0.99), L.tokens / std::max(L.steps, 1.0), 100 * L.prefill / L.wall, 100 * L.decode / L.wall,
                  100 * L.sample / L.wall);
    }
    std::fflush(stdout);
    stop = true;
    server.join();
  }
  std::printf("peak RSS of this process (dsforge models + server): %.0f MB\n", peak_rss_mb());
  remove_all(dir);
  return 0;
}
