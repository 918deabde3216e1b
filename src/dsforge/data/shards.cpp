#include "dsforge/data/shards.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"

namespace dsforge::data {
namespace {
constexpr char kMagic[8] = {'D', 'S', 'F', 'T', 'O', 'K', 'S', '\0'};
}

ShardWriter::ShardWriter(const std::string& path, int64_t vocab_size)
    : path_(path), tmp_(path + ".tmp"), vocab_size_(vocab_size), out_(tmp_, std::ios::binary) {
  if (!out_) throw IoError(fmt(tmp_, ": cannot create"));
  bytes_per_token_ = vocab_size <= 65536 ? 2 : 4;
  out_.write(std::string(kShardHeaderBytes, '\0').data(), kShardHeaderBytes);  // patched by finish()
}

void ShardWriter::append(const std::vector<int32_t>& tokens) {
  buf_.resize(tokens.size() * bytes_per_token_);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size_)
      throw DataError(fmt(path_, ": token ", tokens[i], " at position ", n_ + i, " is outside [0, ", vocab_size_, ")"));
    if (bytes_per_token_ == 2) {
      const auto v = static_cast<uint16_t>(tokens[i]);
      std::memcpy(buf_.data() + 2 * i, &v, 2);
    } else {
      const auto v = static_cast<uint32_t>(tokens[i]);
      std::memcpy(buf_.data() + 4 * i, &v, 4);
    }
  }
  out_.write(buf_.data(), static_cast<std::streamsize>(buf_.size()));
  n_ += tokens.size();
}

void ShardWriter::finish(uint64_t n_docs) {
  ShardHeader h;
  h.bytes_per_token = bytes_per_token_;
  h.n_tokens = n_;
  h.n_docs = n_docs;
  char head[kShardHeaderBytes] = {};
  std::memcpy(head, kMagic, 8);
  std::memcpy(head + 8, &h.version, 4);
  std::memcpy(head + 12, &h.bytes_per_token, 4);
  std::memcpy(head + 16, &h.n_tokens, 8);
  std::memcpy(head + 24, &h.n_docs, 8);
  out_.seekp(0);
  out_.write(head, kShardHeaderBytes);
  out_.close();
  if (!out_) throw IoError(fmt(tmp_, ": write failed"));
  int fd = ::open(tmp_.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::filesystem::rename(tmp_, path_);
}

void write_shard(const std::string& path, const std::vector<int32_t>& tokens, uint64_t n_docs, int64_t vocab_size) {
  ShardWriter w(path, vocab_size);
  w.append(tokens);
  w.finish(n_docs);
}

TokenShard::TokenShard(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw DataError(fmt(path, ": cannot open token shard"));
  struct stat st {};
  ::fstat(fd, &st);
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ < kShardHeaderBytes) {
    ::close(fd);
    throw DataError(fmt(path, ": truncated token shard (", map_size_, " bytes, header needs ", kShardHeaderBytes, ")"));
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw DataError(fmt(path, ": mmap failed"));
  }
  const auto* base = static_cast<const uint8_t*>(map_);
  if (std::memcmp(base, kMagic, 8) != 0)
    throw DataError(fmt(path, ": wrong magic (not a dsforge token shard; expected \"DSFTOKS\")"));
  std::memcpy(&header_.version, base + 8, 4);
  std::memcpy(&header_.bytes_per_token, base + 12, 4);
  std::memcpy(&header_.n_tokens, base + 16, 8);
  std::memcpy(&header_.n_docs, base + 24, 8);
  if (header_.version != 1) throw DataError(fmt(path, ": shard version ", header_.version, ", this build reads version 1"));
  if (header_.bytes_per_token != 2 && header_.bytes_per_token != 4)
    throw DataError(fmt(path, ": bytes_per_token is ", header_.bytes_per_token, ", expected 2 or 4"));
  const uint64_t expect = kShardHeaderBytes + header_.n_tokens * header_.bytes_per_token;
  if (expect != map_size_)
    throw DataError(fmt(path, ": header says ", header_.n_tokens, " tokens (", expect, " bytes) but the file has ",
                        map_size_, " bytes (truncated or corrupt)"));
  tokens_ = base + kShardHeaderBytes;
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(map_, map_size_);
}

int64_t TokenShard::at(uint64_t i) const {
  if (header_.bytes_per_token == 2) {
    uint16_t v;
    std::memcpy(&v, tokens_ + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens_ + 4 * i, 4);
  return v;
}

void TokenShard::copy(uint64_t start, uint64_t n, int64_t* dst) const {
  if (start + n > header_.n_tokens) throw DataError(fmt(path_, ": read past the end of the shard"));
  for (uint64_t i = 0; i < n; ++i) dst[i] = at(start + i);
}

Manifest read_manifest(const std::string& path) {
  if (!file_exists(path)) throw DataError(fmt(path, ": manifest not found (run the tokenize stage first)"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(path, ": not valid JSON (", e.what(), ")"));
  }
  Manifest m;
  try {
    m.tokenizer_hash = j.at("tokenizer_hash").get<std::string>();
    m.vocab_size = j.at("vocab_size").get<int64_t>();
    m.eot_id = j.at("eot_id").get<int64_t>();
    for (auto [name, split] : {std::pair<const char*, Manifest::Split*>{"train", &m.train}, {"val", &m.val},
                               {"test", &m.test}}) {
      if (std::string(name) == "test" && !j.at("splits").contains("test")) continue;  // optional
      const auto& s = j.at("splits").at(name);
      split->files = s.at("files").get<std::vector<std::string>>();
      split->tokens = s.at("tokens").get<int64_t>();
      split->documents = s.at("documents").get<int64_t>();
      split->augmented_documents = s.value("augmented_documents", int64_t{0});
    }
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt(path, ": malformed manifest (", e.what(), ")"));
  }
  return m;
}

void write_manifest(const std::string& path, const Manifest& m) {
  nlohmann::json splits;
  for (auto [name, split] : {std::pair<const char*, const Manifest::Split*>{"train", &m.train}, {"val", &m.val},
                             {"test", &m.test}}) {
    if (split->files.empty() && std::string(name) == "test") continue;
    splits[name] = {{"files", split->files}, {"tokens", split->tokens}, {"documents", split->documents},
                    {"augmented_documents", split->augmented_documents}};
  }
  nlohmann::json j = {{"format", "dsforge-shards-v1"},
                      {"tokenizer_hash", m.tokenizer_hash},
                      {"vocab_size", m.vocab_size},
                      {"eot_id", m.eot_id},
                      {"splits", splits}};
  write_file_atomic(path, j.dump(2) + "\n");
}

TokenLoader::TokenLoader(const std::string& shard_path, int64_t window, int64_t stride, uint64_t seed, bool shuffle)
    : shard_(shard_path), window_(window), stride_(stride), seed_(seed), shuffle_(shuffle) {
  const int64_t n = static_cast<int64_t>(shard_.size());
  n_windows_ = n >= window ? (n - window) / stride + 1 : 0;
  if (n_windows_ == 0)
    throw DataError(fmt(shard_path, ": ", n, " tokens, fewer than one window of ", window, " (reduce train.seq_len)"));
  shuffle_epoch();
}

void TokenLoader::shuffle_epoch() {
  order_.resize(static_cast<size_t>(n_windows_));
  for (int64_t i = 0; i < n_windows_; ++i) order_[i] = i;
  if (!shuffle_) return;
  // Our own Fisher-Yates over a fixed generator: std::shuffle's algorithm is implementation-defined.
  std::mt19937_64 rng(seed_ ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(cursor_.epoch + 1)));
  for (int64_t i = n_windows_ - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order_[i], order_[j]);
  }
}

void TokenLoader::set_cursor(const LoaderCursor& c) {
  if (c.position < 0 || c.position > n_windows_ || c.epoch < 0)
    throw DataError(fmt("loader: cursor (epoch ", c.epoch, ", position ", c.position, ") is out of range for ",
                        n_windows_, " windows"));
  cursor_ = c;
  shuffle_epoch();
}

at::Tensor TokenLoader::next_batch(int64_t batch) { return next_batch(batch, 0, batch); }

at::Tensor TokenLoader::next_batch(int64_t batch, int64_t first, int64_t count) {
  if (first < 0 || count < 0 || first + count > batch)
    throw Error(fmt("loader: rows [", first, ", ", first + count, ") are not within a batch of ", batch));
  at::Tensor out = at::empty({count, window_}, at::kLong);
  int64_t* dst = out.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    if (cursor_.position >= n_windows_) {
      ++cursor_.epoch;
      cursor_.position = 0;
      shuffle_epoch();
    }
    if (b >= first && b < first + count)
      shard_.copy(static_cast<uint64_t>(order_[cursor_.position] * stride_), static_cast<uint64_t>(window_),
                  dst + (b - first) * window_);
    ++cursor_.position;
  }
  return out;
}

}  // namespace dsforge::data
