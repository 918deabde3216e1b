#include "dsforge/embed/glove.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <queue>
#include <thread>
#include <unistd.h>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/embed/kernels.h"

namespace dsforge::embed {

double glove_weight(double x, double x_max, double alpha) { return x < x_max ? std::pow(x / x_max, alpha) : 1.0; }

namespace {
constexpr uint64_t kEmpty = ~0ull;
inline uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

struct RecordFile {  // buffered sequential reader of packed records
  std::FILE* f = nullptr;
  std::vector<CoocRecord> buf;
  size_t pos = 0, n = 0;
  explicit RecordFile(const std::string& path, size_t buffer_records = 1 << 16) : buf(buffer_records) {
    f = std::fopen(path.c_str(), "rb");
    if (!f) throw IoError(fmt(path, ": cannot open co-occurrence run"));
  }
  ~RecordFile() {
    if (f) std::fclose(f);
  }
  bool next(CoocRecord& r) {
    if (pos == n) {
      n = std::fread(buf.data(), sizeof(CoocRecord), buf.size(), f);
      pos = 0;
      if (n == 0) return false;
    }
    r = buf[pos++];
    return true;
  }
  size_t read_block(CoocRecord* out, size_t max) { return std::fread(out, sizeof(CoocRecord), max, f); }
};

void write_records(std::FILE* f, const CoocRecord* r, size_t n, const std::string& path) {
  if (n && std::fwrite(r, sizeof(CoocRecord), n, f) != n) throw IoError(fmt(path, ": write failed (disk full?)"));
}
}  // namespace

CoocCounter::CoocCounter(const std::string& tmp_dir, size_t budget_bytes) : dir_(tmp_dir) {
  // Table of at most half the budget (12 bytes a slot); a spill sorts a copy of as many 12-byte records.
  size_t cap = 1024;
  while (cap * 2 * 12 <= budget_bytes / 2) cap *= 2;
  capacity_ = cap;
  keys_.assign(capacity_, kEmpty);
  vals_.assign(capacity_, 0.0f);
  char tmpl[] = "dsforge-glove-XXXXXX";
  dir_ = path_join(tmp_dir.empty() ? "/tmp" : tmp_dir, tmpl);
  dir_ = std::string(::mkdtemp(dir_.data()) ? dir_ : "");
  if (dir_.empty()) throw IoError(fmt(tmp_dir, ": cannot create a temporary folder for co-occurrence runs"));
}

CoocCounter::~CoocCounter() {
  for (const auto& r : runs_) std::remove(r.c_str());
  if (!merged_.empty()) std::remove(merged_.c_str());
  ::rmdir(dir_.c_str());
}

void CoocCounter::add(int32_t i, int32_t j, float x) {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(i)) << 32) | static_cast<uint32_t>(j);
  const size_t mask = capacity_ - 1;
  for (size_t s = mix(key) & mask;; s = (s + 1) & mask) {
    if (keys_[s] == key) {
      vals_[s] += x;
      return;
    }
    if (keys_[s] == kEmpty) {
      keys_[s] = key;
      vals_[s] = x;
      if (++used_ * 10 > capacity_ * 7) spill();
      return;
    }
  }
}

void CoocCounter::spill() {
  if (used_ == 0) return;
  std::vector<CoocRecord> recs;
  recs.reserve(used_);
  for (size_t s = 0; s < capacity_; ++s)
    if (keys_[s] != kEmpty) recs.push_back({keys_[s], vals_[s]});
  std::sort(recs.begin(), recs.end(), [](const CoocRecord& a, const CoocRecord& b) { return a.key < b.key; });
  const std::string path = path_join(dir_, fmt("run", runs_.size(), ".bin"));
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw IoError(fmt(path, ": cannot create"));
  write_records(f, recs.data(), recs.size(), path);
  if (std::fclose(f) != 0) throw IoError(fmt(path, ": write failed"));
  runs_.push_back(path);
  std::fill(keys_.begin(), keys_.end(), kEmpty);
  used_ = 0;
}

std::string CoocCounter::finish(int64_t* n_records) {
  spill();
  keys_ = {};
  vals_ = {};
  merged_ = path_join(dir_, "merged.bin");
  std::FILE* out = std::fopen(merged_.c_str(), "wb");
  if (!out) throw IoError(fmt(merged_, ": cannot create"));
  std::vector<std::unique_ptr<RecordFile>> in;
  using Head = std::pair<uint64_t, size_t>;  // (key, run)
  std::priority_queue<Head, std::vector<Head>, std::greater<Head>> heap;
  std::vector<CoocRecord> cur(runs_.size());
  for (size_t r = 0; r < runs_.size(); ++r) {
    in.push_back(std::make_unique<RecordFile>(runs_[r]));
    if (in[r]->next(cur[r])) heap.push({cur[r].key, r});
  }
  std::vector<CoocRecord> outbuf;
  outbuf.reserve(1 << 16);
  int64_t n = 0;
  while (!heap.empty()) {
    const auto [key, r] = heap.top();
    heap.pop();
    if (!outbuf.empty() && outbuf.back().key == key) {
      outbuf.back().x += cur[r].x;
    } else {
      if (outbuf.size() == outbuf.capacity()) {
        write_records(out, outbuf.data(), outbuf.size() - 1, merged_);  // the last may still grow
        outbuf.erase(outbuf.begin(), outbuf.end() - 1);
      }
      outbuf.push_back(cur[r]);
      ++n;
    }
    if (in[r]->next(cur[r])) heap.push({cur[r].key, r});
  }
  write_records(out, outbuf.data(), outbuf.size(), merged_);
  if (std::fclose(out) != 0) throw IoError(fmt(merged_, ": write failed"));
  in.clear();
  for (const auto& r : runs_) std::remove(r.c_str());
  *n_records = n;
  return merged_;
}

void count_cooccurrences(const std::vector<std::string>& files, const Vocab& vocab, int window, CoocCounter& counter) {
  std::vector<int32_t> sen;
  for (const auto& path : files) {
    LineReader reader(path, 0, file_size_of(path));
    std::string_view line;
    while (reader.next(line)) {
      sen.clear();
      for_each_word(line, [&](std::string_view w) {
        const int32_t i = vocab.table.find(w);
        if (i >= 0) sen.push_back(i);
      });
      const int n = static_cast<int>(sen.size());
      for (int p = 0; p < n; ++p)
        for (int d = 1; d <= window && p - d >= 0; ++d) {
          const float x = 1.0f / static_cast<float>(d);
          counter.add(sen[p], sen[p - d], x);
          counter.add(sen[p - d], sen[p], x);
        }
    }
  }
}

namespace {

struct GloveModel {
  int dim;
  size_t V;
  std::vector<float> w, grad;  // rows 0..V-1 word vectors, V..2V-1 context vectors; dim + 1 (bias) each
  float* row(size_t r) { return w.data() + r * static_cast<size_t>(dim + 1); }
  float* gsq(size_t r) { return grad.data() + r * static_cast<size_t>(dim + 1); }
};

__attribute__((target_clones("arch=x86-64-v3", "default")))
double glove_block(GloveModel& m, const CoocRecord* recs, size_t n, double x_max, double alpha, float eta, float* t1, float* t2) {
  const int D = m.dim;
  double cost = 0;
  for (size_t k = 0; k < n; ++k) {
    const CoocRecord& r = recs[k];
    float* wi = m.row(static_cast<size_t>(r.i()));
    float* wj = m.row(m.V + static_cast<size_t>(r.j()));
    float* gi = m.gsq(static_cast<size_t>(r.i()));
    float* gj = m.gsq(m.V + static_cast<size_t>(r.j()));
    const float diff = kernels::dot(wi, wj, D) + wi[D] + wj[D] - std::log(r.x);
    float fdiff = r.x > x_max ? diff : static_cast<float>(std::pow(r.x / x_max, alpha)) * diff;
    if (!std::isfinite(fdiff)) continue;
    cost += 0.5 * static_cast<double>(fdiff) * diff;
    fdiff *= eta;
    for (int b = 0; b < D; ++b) {
      t1[b] = fdiff * wj[b];
      t2[b] = fdiff * wi[b];
    }
    for (int b = 0; b < D; ++b) {  // AdaGrad
      wi[b] -= t1[b] / std::sqrt(gi[b]);
      wj[b] -= t2[b] / std::sqrt(gj[b]);
      gi[b] += t1[b] * t1[b];
      gj[b] += t2[b] * t2[b];
    }
    wi[D] -= fdiff / std::sqrt(gi[D]);
    wj[D] -= fdiff / std::sqrt(gj[D]);
    gi[D] += fdiff * fdiff;
    gj[D] += fdiff * fdiff;
  }
  return cost;
}

}  // namespace

EmbedResult train_glove(const EmbedConfig& cfg, Vocab vocab) {
  EmbedResult res;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t n_records = 0;
  CoocCounter counter(cfg.tmp_dir, static_cast<size_t>(cfg.memory_mb) << 20);
  count_cooccurrences(cfg.inputs, vocab, cfg.window, counter);
  const std::string merged = counter.finish(&n_records);
  res.report.cooc_entries = n_records;
  res.report.cooc_runs = counter.runs();
  res.report.cooc_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (n_records == 0)
    throw DataError(fmt(cfg.inputs.front(), ": no two vocabulary words share a line within --window ", cfg.window,
                        "; GloVe has nothing to fit"));

  GloveModel m;
  m.dim = cfg.dim;
  m.V = vocab.size();
  const size_t row = static_cast<size_t>(cfg.dim + 1);
  m.w.resize(2 * m.V * row);
  m.grad.assign(2 * m.V * row, 1.0f);  // AdaGrad sums start at 1 as in the reference
  uint64_t s = cfg.seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& x : m.w) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    x = (static_cast<float>(s >> 40) / 16777216.0f - 0.5f) / static_cast<float>(cfg.dim);
  }
  const float eta = static_cast<float>(cfg.alpha > 0 ? cfg.alpha : 0.05);
  const size_t block = 1 << 20;  // records shuffled together (12 MiB)
  std::vector<CoocRecord> recs(block), shuffled(block);
  std::vector<uint32_t> order;
  const auto t1 = std::chrono::steady_clock::now();
  for (int epoch = 0; epoch < cfg.epochs; ++epoch) {
    RecordFile in(merged);
    double cost = 0;
    size_t got = 0;
    int64_t blk = 0;
    while ((got = in.read_block(recs.data(), block)) > 0) {
      order.resize(got);
      for (size_t k = 0; k < got; ++k) order[k] = static_cast<uint32_t>(k);
      shuffle_in_place(order, cfg.seed + static_cast<uint64_t>(epoch) * 1000003 + static_cast<uint64_t>(blk++));
      for (size_t k = 0; k < got; ++k) shuffled[k] = recs[order[k]];
      const int T = cfg.threads;
      std::vector<double> part(static_cast<size_t>(T), 0.0);
      auto work = [&](int t) {
        std::vector<float> a(static_cast<size_t>(cfg.dim)), b(static_cast<size_t>(cfg.dim));
        const size_t lo = got * static_cast<size_t>(t) / static_cast<size_t>(T), hi = got * static_cast<size_t>(t + 1) / static_cast<size_t>(T);
        part[static_cast<size_t>(t)] = glove_block(m, shuffled.data() + lo, hi - lo, cfg.x_max, cfg.glove_alpha, eta, a.data(), b.data());
      };
      std::vector<std::thread> pool;
      for (int t = 1; t < T; ++t) pool.emplace_back(work, t);
      work(0);
      for (auto& th : pool) th.join();
      for (double c : part) cost += c;
    }
    res.report.epoch_loss.push_back(cost / static_cast<double>(n_records));
    if (cfg.verbose) std::fprintf(stderr, "glove: epoch %d cost %.6f\n", epoch + 1, cost / static_cast<double>(n_records));
  }
  res.report.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  res.report.trained_words = n_records * cfg.epochs;

  WordVectors& v = res.vectors;
  v.dim = cfg.dim;
  v.words = vocab.table.words();
  v.counts = vocab.table.counts();
  v.data.resize(m.V * static_cast<size_t>(cfg.dim));
  for (size_t i = 0; i < m.V; ++i) {
    const float* a = m.row(i);
    const float* b = m.row(m.V + i);
    for (int k = 0; k < cfg.dim; ++k) v.row(i)[k] = a[k] + b[k];
  }
  return res;
}

}  // namespace dsforge::embed
